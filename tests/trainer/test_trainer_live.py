"""The whole trainer service with ``triton_live`` on, over a real broker and a real tritonserver.

The live model (``<name>-ranker-live``) is loaded before the first export; each exported
version becomes served by it in place (an infer naming the version answers, and
``freshrank_trainer_model_version`` follows); the per-version model ``<name>-ranker`` is never
loaded; a version the live model no longer keeps is answered with its ``NOT_LOADED`` error.
Every wait is on a condition under a generous deadline (the machine may be busy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry
from trainer_support import produce, small_settings
from tritonclient.utils import InferenceServerException
from waiting import eventually

from freshrank.core.model_repo import ModelRepository, live_model_name, triton_inputs
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton, free_port
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.service import run_service

pytestmark = pytest.mark.integration
NOT_LOADED = "is not loaded in the live model"  # core.triton_python_model.NOT_LOADED
LIVE_KEEP = 2  # versions the live model keeps loaded (FRESHRANK_LIVE_KEEP)
VERSIONS = LIVE_KEEP + 1  # one more: the first one is no longer kept
DEADLINE_S = 120.0  # per condition; measured: a few seconds each on an idle machine
CHUNK = 200  # events per version
Scores = npt.NDArray[np.float32]
WORLD = SyntheticConfig(users=40, items=40, topics=4, events=VERSIONS * CHUNK, seed=11)


@pytest.fixture
def live_triton(tmp_path: Path, model_repository: Path) -> Iterator[EmbeddedTriton]:
    """A real tritonserver whose live model keeps ``LIVE_KEEP`` versions, on one thread."""
    env = {"FRESHRANK_LIVE_KEEP": str(LIVE_KEEP), "FRESHRANK_TRITON_THREADS": "1"}
    with EmbeddedTriton(tmp_path, model_repository, env=env) as running:
        yield running


def _infer(triton: EmbeddedTriton, model: str, version: int) -> Scores | str:
    """Scores of the live model for ``version`` (one user, two candidates), or Triton's error."""
    one, two = np.zeros(1, dtype=np.int64), np.array([1, 2], dtype=np.int64)
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        result = client.infer(
            live_model_name(model), triton_inputs(httpclient.InferInput, 1, one, two, version)
        )
    except InferenceServerException as exc:
        return str(exc)
    finally:
        client.close()
    scores: Scores | None = result.as_numpy("scores")
    assert scores is not None
    return scores


def _model_ready(triton: EmbeddedTriton, model: str) -> bool:
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException:
        return False
    finally:
        client.close()


async def test_the_live_model_serves_each_exported_version_in_place(
    broker: EmbeddedBroker,
    unique_name: str,
    tmp_path: Path,
    model_repository: Path,
    live_triton: EmbeddedTriton,
    one_torch_thread: None,
) -> None:
    settings = small_settings(
        broker,
        unique_name,
        tmp_path,
        port=free_port(),
        host="127.0.0.1",
        model_repository=str(model_repository),
        triton_url=f"http://{live_triton.http_url}",
        triton_live=True,
        # One export per produced chunk: exports follow the events, not the clock.
        export_interval_s=3600.0,
        export_every_events=CHUNK,
        keep_versions=LIVE_KEEP,
        watch_s=0.5,
    )
    model = settings.triton_model
    repository = ModelRepository(model_repository, model)
    events = list(SyntheticStream(WORLD).events())
    chunks = [events[i : i + CHUNK] for i in range(0, VERSIONS * CHUNK, CHUNK)]
    registry = CollectorRegistry()

    def served_metric() -> float:
        return registry.get_sample_value("freshrank_trainer_model_version") or 0.0

    stop = asyncio.Event()
    started = time.monotonic()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    answered: dict[int, Scores | str] = {}
    try:

        async def live_model_loaded() -> bool:
            assert not service.done(), service  # a crashed service fails at once, not by timeout
            return await asyncio.to_thread(_model_ready, live_triton, live_model_name(model))

        # The watchdog loads the live model before any export (its one-time start is not
        # paid by the first version's freshness).
        await eventually(live_model_loaded, DEADLINE_S)
        assert repository.versions() == []
        for version, chunk in enumerate(chunks, start=1):
            produce(broker, settings.events_topic, chunk)

            async def served(version: int = version) -> bool:
                assert not service.done(), service
                if repository.record(version) is None or served_metric() != version:
                    return False
                answered[version] = await asyncio.to_thread(_infer, live_triton, model, version)
                return not isinstance(answered[version], str)

            await eventually(served, DEADLINE_S, interval=0.2)
            # Versions are published one at a time: this export covered exactly this chunk.
            record = repository.record(version)
            assert record is not None
            assert record.served_by_triton
            assert record.events_covered == sum(len(c) for c in chunks[:version])

        def first_version_dropped() -> str | Scores:
            return _infer(live_triton, model, 1)

        async def no_longer_kept() -> bool:  # the live model drops it once the next loads
            return isinstance(await asyncio.to_thread(first_version_dropped), str)

        await eventually(no_longer_kept, DEADLINE_S)
        dropped = await asyncio.to_thread(first_version_dropped)
        newest = await asyncio.to_thread(_infer, live_triton, model, VERSIONS)
        per_version_model_loaded = await asyncio.to_thread(_model_ready, live_triton, model)
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)
    elapsed = time.monotonic() - started

    print(f"\ntrainer with triton_live: {VERSIONS} versions served in {elapsed:.1f} s")
    for version in range(1, VERSIONS + 1):
        scores = answered[version]
        assert isinstance(scores, np.ndarray), (version, scores)
        assert scores.shape == (1, 2)
        assert np.isfinite(scores).all()
    assert isinstance(dropped, str)
    assert NOT_LOADED in dropped, dropped
    assert "model version 1" in dropped
    assert isinstance(newest, np.ndarray)  # the newest is still served after the drop
    assert served_metric() == VERSIONS
    assert not per_version_model_loaded  # live mode: one process, no per-version models
    assert repository.versions() == list(range(VERSIONS - LIVE_KEEP + 1, VERSIONS + 1))
    exports = registry.get_sample_value("freshrank_trainer_exports_total", {"outcome": "ok"})
    assert exports == VERSIONS
