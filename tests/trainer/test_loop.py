"""The trainer service in-process against the real broker: malformed messages skipped,
metrics, traces, clean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from trainer_support import produce, small_settings

from freshrank.core.kafka import consumer_config
from freshrank.embedded import EmbeddedBroker, free_port
from freshrank.model.knn import WEIGHT_GRID
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.checkpoint import CheckpointStore
from freshrank.trainer.service import run_service

pytestmark = pytest.mark.integration
WEIGHT_GRID_F32 = [float(np.float32(weight)) for weight in WEIGHT_GRID]  # as the model stores them
GARBAGE = (b"\x08\x96\x01garbage\xff", b"")


async def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("condition not met")


async def test_trains_skips_malformed_and_reports(
    broker: EmbeddedBroker,
    unique_name: str,
    tmp_path: Path,
    span_exporter: InMemorySpanExporter,
) -> None:
    port = free_port()
    settings = small_settings(
        broker, unique_name, tmp_path, port=port, host="127.0.0.1", architecture="sasrec"
    )
    events = list(SyntheticStream(SyntheticConfig(users=50, items=40, events=500)).events())
    with trace.get_tracer("test").start_as_current_span("producer") as span:
        producer_trace = span.get_span_context().trace_id
        produce(broker, settings.events_topic, events, raw=GARBAGE)

    stop = asyncio.Event()
    registry = CollectorRegistry()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    base = f"http://127.0.0.1:{port}"

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    async def trained_all() -> bool:
        return sample("freshrank_trainer_events_trained_total") >= len(events)

    try:
        await _wait_for(trained_all)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["events_trained"] == len(events)
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
        assert 'freshrank_trainer_prequential{metric="hr@10"}' in text
        assert sample("freshrank_trainer_events_dead_lettered_total") == len(GARBAGE)
        assert sample("freshrank_trainer_prequential", metric="hr@10") > 0.0
        # sasrec's kNN term: the weight its prequential tally chose, one of the grid's.
        assert 'freshrank_trainer_model_stats{stat="knn_weight"}' in text
        assert sample("freshrank_trainer_model_stats", stat="knn_weight") in WEIGHT_GRID_F32
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)

    # Skipped, not dead-lettered: the feature ingester owns the dead-letter topic (each bad
    # message once; tests/chaos/test_chaos_dead_letters.py runs both consumers).
    reader = Consumer(consumer_config(broker.bootstrap, f"{unique_name}-dlq-reader"))
    low, high = reader.get_watermark_offsets(TopicPartition(settings.dlq_topic, 0), 10)
    reader.close()
    assert high - low == 0

    # Clean stop: the final checkpoint and the committed offsets cover every message.
    checkpoint = CheckpointStore(Path(settings.checkpoint_dir)).load()
    assert checkpoint is not None
    total = len(events) + len(GARBAGE)
    assert checkpoint.offsets == {(settings.events_topic, 0): total}
    assert checkpoint.learner["events_trained"] == len(events)
    reader = Consumer(consumer_config(broker.bootstrap, settings.group))
    [committed] = reader.committed([TopicPartition(settings.events_topic, 0)], 10)
    reader.close()
    assert committed.offset == total

    batches = [s for s in span_exporter.get_finished_spans() if s.name == "train_batch"]
    linked = {link.context.trace_id for s in batches for link in s.links}
    assert producer_trace in linked
