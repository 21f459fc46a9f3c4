"""Operator fixtures: kmock's KubernetesEmulator served over HTTP, with our API semantics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest
from kube_harness import FakeApi

from freshrank_operator.testing import make_emulator


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with make_emulator() as handler, kmock.Server(handler):
        yield handler


@pytest.fixture
def api(emulator: kmock.KubernetesEmulator) -> FakeApi:
    return FakeApi(emulator)
