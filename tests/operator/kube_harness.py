"""kmock's KubernetesEmulator for what a real API server cannot be made to do (store a CR its
schema rejects): read its objects, and run the operator against it.

Everything else runs on the real API server: tests/operator/envtest.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
from envtest import eventually

from freshrank_operator import crd
from freshrank_operator.handlers import Runtime
from freshrank_operator.testing import (
    CHILD_RESOURCES,
    CR_RESOURCE,
    emulator_config,
    operator_thread,
)

__all__ = ["CR_RESOURCE", "FakeApi", "eventually", "example_cr", "running_operator"]


def example_cr(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9"}, **spec},
    }


class FakeApi:
    """Reads the emulator's store directly."""

    def __init__(self, emulator: kmock.KubernetesEmulator) -> None:
        self.emulator = emulator

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.emulator.objects[key].raw
        return raw

    def children(self, namespace: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for kind, resource in CHILD_RESOURCES.items():
            for (res, ns, obj_name), obj in list(self.emulator.objects.items()):
                if res != kmock.resource(resource) or ns != namespace or obj.deleted:
                    continue
                labels = obj.raw.get("metadata", {}).get("labels") or {}
                if labels.get("app.kubernetes.io/instance") == name:
                    found[(kind, obj_name)] = obj.raw
        return found


@contextlib.asynccontextmanager
async def running_operator(
    url: str, *, namespace: str = "default", serve_metrics: bool = False, **overrides: Any
) -> AsyncIterator[Runtime]:
    """The real Kopf runtime in its own thread and loop (as KopfRunner runs it)."""
    config = emulator_config(url, namespace, **overrides)
    async with operator_thread(config, serve_metrics=serve_metrics) as runtime:
        yield runtime
