"""A restarted (or unloaded) Triton serves the latest good version again within seconds.

Real tritonserver, explicit model control: after a restart it holds no model, and on a quiet
stream no export would come to load one. The trainer's watchdog notices and loads the newest
version with a manifest record; ``freshrank_trainer_model_version`` reports what Triton
actually serves (0 while it is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import torch
from prometheus_client import CollectorRegistry

from freshrank.core.model_repo import ModelRepository, live_model_name
from freshrank.embedded import EmbeddedTriton
from freshrank.model import IdMap, ModelConfig, build_model
from freshrank.model.export import export_version
from freshrank.trainer.exporter import Exporter, LiveTritonControl, StagedExport, TritonControl
from freshrank.trainer.metrics import TrainerMetrics

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
MODEL = "w-ranker"
SERVED_AGAIN_WITHIN_S = 60.0  # generous for a loaded CI machine; measured ~3-6 s when quiet


def _stage(directory: Path, seed: int) -> StagedExport:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(architecture="mf", num_users=10, num_items=20, dim=8)).eval()
    directory.mkdir(parents=True)
    export_version(model, directory, {"users": IdMap(10).to_json(), "items": IdMap(20).to_json()})
    return StagedExport(
        directory=directory,
        events_covered=seed,
        last_event_timestamp_ms=0,
        newest_ingest_ms=int(time.time() * 1000),
        metrics={},
    )


async def _ready(control: TritonControl, version: int) -> bool:
    try:
        return await control.is_ready(MODEL, version, 2.0)
    except Exception:  # down, or busy loading: not (yet) served
        return False


class Watched:
    def __init__(
        self, exporter: Exporter, registry: CollectorRegistry, control: type[TritonControl]
    ) -> None:
        self.exporter = exporter
        self.registry = registry
        self.control = control  # TritonControl (a Triton version per export) or the live model

    def reported_version(self) -> float:
        return self.registry.get_sample_value("freshrank_trainer_model_version") or 0.0

    async def until(self, predicate: object, timeout: float, what: str) -> float:
        """Seconds until ``predicate()`` holds (polled every 50 ms)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if await predicate():  # type: ignore[operator]
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{what} not within {timeout}s")


@pytest_asyncio.fixture(params=[TritonControl, LiveTritonControl], ids=["versions", "live"])
async def watched(
    triton: EmbeddedTriton, model_repository: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Watched]:
    registry = CollectorRegistry()
    control: type[TritonControl] = request.param
    exporter = Exporter(
        ModelRepository(model_repository, MODEL),
        control(triton.http_url),
        TrainerMetrics(registry),
        ready_timeout_s=120.0,
        watch_s=1.0,
    )
    for seed in (1, 2):
        await exporter.publish(_stage(tmp_path / f"staged-{seed}", seed))
    stop = asyncio.Event()
    watchdog = asyncio.create_task(exporter.watch(stop))
    try:
        yield Watched(exporter, registry, control)
    finally:
        stop.set()
        await asyncio.wait_for(watchdog, 30)
        await exporter.close()


async def test_restarted_triton_serves_the_latest_good_version_again(
    triton: EmbeddedTriton, watched: Watched
) -> None:
    control = watched.control(triton.http_url)
    assert watched.reported_version() == 2

    triton.process.kill()

    async def reported_none() -> bool:
        return watched.reported_version() == 0

    await watched.until(reported_none, 30, "model_version 0 while Triton is down")

    restarted = time.monotonic()
    await asyncio.to_thread(triton.start)  # same repository and ports, explicit mode: empty
    live_s = time.monotonic() - restarted

    async def served_again() -> bool:
        return await _ready(control, 2) and watched.reported_version() == 2

    served_s = live_s + await watched.until(served_again, SERVED_AGAIN_WITHIN_S, "served again")
    await control.close()
    log.warning("Triton restart -> live %.1f s -> version 2 served %.1f s", live_s, served_s)
    print(f"\nTriton restart: live after {live_s:.1f} s, model served after {served_s:.1f} s")
    assert watched.exporter.reloads >= 1


async def test_a_model_unloaded_behind_its_back_is_loaded_again(
    triton: EmbeddedTriton, watched: Watched
) -> None:
    control = watched.control(triton.http_url)
    live = watched.control is LiveTritonControl
    await control._client.unload_model(live_model_name(MODEL) if live else MODEL)
    assert not await _ready(control, 2)

    async def served_again() -> bool:
        # The gauge still says 2 from before the unload until the reload has finished.
        reloaded = watched.exporter.reloads >= 1
        return reloaded and await _ready(control, 2) and watched.reported_version() == 2

    seconds = await watched.until(served_again, SERVED_AGAIN_WITHIN_S, "loaded again")
    await control.close()
    print(f"\nunloaded model served again after {seconds:.1f} s")
