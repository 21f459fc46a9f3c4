"""The operator's logs on the real API server (envtest): one compact JSON line per event,
nothing at idle, failures named."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from envtest import ClusterApi, eventually, example_cr, running_operator

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator.logs import setup_operator_logging

pytestmark = pytest.mark.integration
TICK_S = 0.2  # an idle window of 3 s is 15 timer ticks per CR


@pytest.fixture
def operator_log() -> Iterator[io.StringIO]:
    """What the operator process writes to stderr (its CLI's logging setup)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = setup_operator_logging("INFO")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]  # one JSON object per line


async def test_idle_crs_log_nothing_and_each_line_is_compact_json(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, operator_log: io.StringIO
) -> None:
    ns = cluster_api.namespace
    names = [f"shop{i}" for i in range(3)]
    async with running_operator(kube_cluster, ns, tick_seconds=TICK_S):
        for name in names:
            await cluster_api.create_cr(example_cr(name, ns))

        async def all_applied() -> bool:
            for name in names:
                expected = await cluster_api.expected_children(name)
                if not expected <= set(await cluster_api.children(name)):
                    return False
            logged = {r.get("cr") for r in _records(operator_log.getvalue())}
            return logged >= {f"{ns}/{n}" for n in names}

        await eventually(all_applied, timeout=60)
        gc.collect()  # what earlier tests left for the collector logs now, not in the window
        settled = len(operator_log.getvalue())
        idle_started = time.monotonic()
        # The measurement window itself (not a wait for a condition): 15 ticks per CR.
        await asyncio.sleep(15 * TICK_S)
        idle = operator_log.getvalue()[settled:]
        idle_s = time.monotonic() - idle_started
    # The test process also runs the test's own clients: aiohttp sessions some test left
    # unclosed are reported by asyncio when collected, whenever that happens. Not the operator.
    idle_lines = [
        line
        for line, record in zip(idle.splitlines(), _records(idle), strict=True)
        if not (record["logger"] == "asyncio" and str(record["msg"]).startswith("Unclosed"))
    ]
    idle_bytes = sum(len(line) + 1 for line in idle_lines)
    assert not idle_lines, f"{idle_bytes} bytes in {idle_s:.1f}s of idle: {idle_lines[:3]}"
    records = _records(operator_log.getvalue())
    reconciled = [r for r in records if r["msg"] == "reconciled"]
    assert {r["cr"] for r in reconciled} == {f"{ns}/{n}" for n in names}
    # Every apply and status write was a request; the client's HTTP library logs none of them.
    assert not [r for r in records if r["logger"].startswith(("httpx", "httpcore"))]
    for line, record in zip(operator_log.getvalue().splitlines(), records, strict=True):
        assert not {"settings", "k8s_ref", "k8s_skip"} & set(record), record
        assert len(line) < 1500, line


async def test_a_failing_reconcile_is_logged_naming_the_cr_and_the_cause(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, operator_log: io.StringIO
) -> None:
    ns = cluster_api.namespace
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "nope"}}}
    async with running_operator(kube_cluster, ns, tick_seconds=TICK_S):
        await cluster_api.create_cr(example_cr("broken", ns, **spec))

        def failure() -> dict[str, Any] | None:
            for record in _records(operator_log.getvalue()):
                if record["level"] in {"warning", "error"} and "nope" in record["msg"]:
                    return record
            return None

        record = await eventually(failure, timeout=60)
    assert record["cr"] == f"{ns}/broken"
    assert record["logger"].startswith("freshrank")
