"""Exports on the real broker + real Triton: versions served, drift learned, gate, freshness."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from trainer_support import produce, small_settings

from freshrank.core.codec import InteractionEvent
from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton, free_port
from freshrank.model import IdMap
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.service import run_service

pytestmark = pytest.mark.integration
WORLD = SyntheticConfig(users=60, items=60, topics=6, events=5000, drift_at=0.3, seed=5)
TRAINED = 4600  # the rest is held out: post-drift events no version has seen
HISTORY = 8


async def _record_covering(
    repository: ModelRepository, events: int, timeout: float = 150.0
) -> ExportRecord:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for record in repository.manifest():
            if record.events_covered == events:
                return record
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no export covering {events} events: {repository.manifest()}")


def _hit_rate_on_triton(
    triton: EmbeddedTriton,
    repository: ModelRepository,
    version: int,
    seen: list[InteractionEvent],
    held_out: list[InteractionEvent],
) -> float:
    """HR@10 of ``version`` served by Triton: rank each held-out item among all known items."""
    ids = json.loads((repository.version_dir(version) / "ids.json").read_text())
    users, items = IdMap.from_json(ids["users"]), IdMap.from_json(ids["items"])
    history: dict[str, list[str]] = defaultdict(list)
    for event in seen:
        history[event.user_id].insert(0, event.item_id)
    candidates = np.array(sorted(items.rows(items.known_ids())), dtype=np.int64)
    client = httpclient.InferenceServerClient(triton.http_url)
    hits = 0
    for start in range(0, len(held_out), 32):
        chunk = held_out[start : start + 32]
        rows = np.zeros((len(chunk), HISTORY), dtype=np.int64)
        for index, event in enumerate(chunk):
            recent = items.rows(history[event.user_id][:HISTORY])
            rows[index, : len(recent)] = recent
        arrays = {
            "user_row": users.rows(e.user_id for e in chunk).reshape(-1, 1),
            "history_rows": rows,
            "candidate_rows": np.tile(candidates, (len(chunk), 1)),
        }
        inputs = []
        for name, array in arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(repository.model_name, inputs, model_version=str(version))
        scores = result.as_numpy("scores")
        assert scores is not None
        for index, event in enumerate(chunk):
            true_row = items.row(event.item_id)
            top = candidates[np.argsort(-scores[index], kind="stable")[:10]]
            hits += int(true_row != 0 and true_row in top)
    client.close()
    return hits / len(held_out)


async def test_versions_are_served_and_the_newer_one_learned_the_drift(
    broker: EmbeddedBroker,
    unique_name: str,
    tmp_path: Path,
    model_repository: Path,
    triton: EmbeddedTriton,
    span_exporter: InMemorySpanExporter,
) -> None:
    settings = small_settings(
        broker,
        unique_name,
        tmp_path,
        port=free_port(),
        host="127.0.0.1",
        model_repository=str(model_repository),
        triton_url=f"http://{triton.http_url}",
        export_interval_s=1.0,
        history_len=HISTORY,
        keep_versions=3,
        max_regression=0.05,
    )
    stream = SyntheticStream(WORLD)
    events = list(stream.events())
    pre, post, held_out = (
        events[: stream.drift_index],
        events[stream.drift_index : TRAINED],
        events[TRAINED:],
    )
    # The first export waits for the whole pre-drift stream (the gate's min_events); each
    # Python-backend load takes seconds here, so the test asks for two versions only.
    settings = settings.model_copy(update={"min_events": len(pre)})
    repository = ModelRepository(model_repository, settings.triton_model)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    try:
        produce(broker, settings.events_topic, pre)
        # Query version 1 before the drift is produced: Triton serves one version at a time.
        before = await _record_covering(repository, len(pre))
        hr_before = await asyncio.to_thread(
            _hit_rate_on_triton, triton, repository, before.version, pre, held_out
        )
        produce(broker, settings.events_topic, post)
        after = await _record_covering(repository, TRAINED)
        hr_after = await asyncio.to_thread(
            _hit_rate_on_triton, triton, repository, after.version, pre + post, held_out
        )
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)

    assert before.version == 1
    assert after.version > before.version
    assert hr_after > hr_before + 0.05, (hr_before, hr_after)
    for record in (before, after):
        assert record.timings is not None
        assert record.timings.freshness_s >= 0.0
        assert record.timings.last_ingest_timestamp_ms <= record.timings.ready_at_ms
        assert record.model.history_len == HISTORY
        assert record.offsets  # the stream position the version covers
        assert set(record.metrics) >= {"hr@10", "ndcg@10"}
    assert after.last_event_timestamp_ms == post[-1].timestamp_ms
    assert len(repository.versions()) <= settings.keep_versions
    value = registry.get_sample_value
    assert (value("freshrank_trainer_freshness_seconds_count") or 0) >= 2
    assert value("freshrank_trainer_model_version") == after.version
    exported = {
        s.attributes.get("freshrank.model.version")
        for s in span_exporter.get_finished_spans()
        if s.name == "export" and s.attributes
    }
    assert {before.version, after.version} <= exported


async def test_quality_gate_skips_exports_below_the_floor(
    broker: EmbeddedBroker, unique_name: str, tmp_path: Path
) -> None:
    settings = small_settings(
        broker, unique_name, tmp_path, port=0, export_interval_s=0.3, quality_floor=1.01
    )
    events = list(SyntheticStream(SyntheticConfig(users=20, items=20, events=600)).events())
    produce(broker, settings.events_topic, events[:300])
    registry = CollectorRegistry()
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    skipped = 0.0
    try:
        for _ in range(300):
            skipped = (
                registry.get_sample_value(
                    "freshrank_trainer_exports_total", {"outcome": "skipped_quality"}
                )
                or 0.0
            )
            if skipped >= 1:
                break
            await asyncio.sleep(0.1)
        produce(broker, settings.events_topic, events[300:])
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
    assert skipped >= 1
    assert ModelRepository(Path(settings.model_repository), settings.triton_model).versions() == []
