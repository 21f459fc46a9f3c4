"""The operator's logs: one compact JSON line per event, nothing at idle, failures named."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import kmock
import pytest
from kube_harness import FakeApi, eventually, example_cr, running_operator

from freshrank_operator.logs import setup_operator_logging

pytestmark = pytest.mark.integration
NS = "default"
TICK_S = 0.2  # the harness's timer period: an idle window of 3 s is 15 ticks per CR


@pytest.fixture
def operator_log() -> Iterator[io.StringIO]:
    """What the operator process writes to stderr (its CLI's logging setup)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = setup_operator_logging("INFO")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    # kmock's server logs every request it answers; it is not the operator: keep it out.
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    access.setLevel(logging.WARNING)
    yield stream
    access.setLevel(access_level)
    root.handlers[:] = handlers
    root.setLevel(level)


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]  # one JSON object per line


async def test_idle_crs_log_nothing_and_each_line_is_compact_json(
    emulator: kmock.KubernetesEmulator, api: FakeApi, operator_log: io.StringIO
) -> None:
    names = [f"shop{i}" for i in range(3)]
    async with running_operator(str(emulator.url), tick_seconds=TICK_S):
        for name in names:
            await api.create_cr(example_cr(name))
        await eventually(
            lambda: (
                {r.get("cr") for r in _records(operator_log.getvalue())}
                >= {f"{NS}/{n}" for n in names}
            )
        )
        await eventually(lambda: all(api.children(NS, n) for n in names))
        settled = len(operator_log.getvalue())
        idle_started = time.monotonic()
        # The measurement window itself (not a wait for a condition): 15 ticks per CR.
        await asyncio.sleep(15 * TICK_S)
        idle = operator_log.getvalue()[settled:]
        idle_s = time.monotonic() - idle_started
    assert idle == "", f"{len(idle)} bytes in {idle_s:.1f}s of idle: {idle[:500]}"
    records = _records(operator_log.getvalue())
    reconciled = [r for r in records if r["msg"] == "reconciled"]
    assert {r["cr"] for r in reconciled} == {f"{NS}/{n}" for n in names}
    for line, record in zip(operator_log.getvalue().splitlines(), records, strict=True):
        assert not {"settings", "k8s_ref", "k8s_skip"} & set(record), record
        assert len(line) < 1500, line


async def test_a_failing_reconcile_is_logged_naming_the_cr_and_the_cause(
    emulator: kmock.KubernetesEmulator, api: FakeApi, operator_log: io.StringIO
) -> None:
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "nope"}}}
    async with running_operator(str(emulator.url), tick_seconds=TICK_S):
        await api.create_cr(example_cr("broken", **spec))

        def failure() -> dict[str, Any] | None:
            for record in _records(operator_log.getvalue()):
                if record["level"] in {"warning", "error"} and "'nope'" in record["msg"]:
                    return record
            return None

        record = await eventually(failure)
    assert record["cr"] == f"{NS}/broken"
    assert record["logger"].startswith("kopf")
