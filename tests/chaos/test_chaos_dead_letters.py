"""Both consumers of a deployment's stream (trainer and feature service) on one real broker:
every malformed message lands on the dead-letter topic exactly once, with its reason and
origin, and both move past it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kafka_support import (
    committed_offset,
    dead_letter_reasons,
    header,
    raw_event,
    read_all,
    send_raw,
)
from prometheus_client import CollectorRegistry
from waiting import eventually

from freshrank.core.kafka import ERROR_HEADER, EventProducer, ensure_topics
from freshrank.embedded import EmbeddedBroker, free_port
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.service import run_service
from freshrank.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration


MALFORMED = {
    b"\x08\x96\x01garbage\xff": "not a protobuf",
    raw_event(event_id="b1", user_id="u" * 301): "user_id is 301 bytes",
    raw_event(event_id="b2", item_id="item\x00one"): "item_id contains a control character",
    raw_event(event_id="b3", timestamp_ms=int(time.time() * 1_000_000)): "microseconds",
    raw_event(event_id="b4", type=42): "unknown event type 42",
    raw_event(event_id="", user_id="u1"): "missing required field 'event_id'",
}


async def test_each_malformed_message_is_dead_lettered_exactly_once(
    broker: EmbeddedBroker, unique_name: str, tmp_path: Path
) -> None:
    trainer_settings = TrainerSettings(
        name=unique_name,
        bootstrap_servers=broker.bootstrap,
        model_repository=str(tmp_path / "models"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        triton_url="",
        batch_size=64,
        poll_timeout_s=0.1,
        checkpoint_interval_s=0.5,
        export_interval_s=3600.0,
        min_events=0,
        max_regression=1.0,
        device="cpu",
        architecture="mf",
        dim=16,
        history_len=8,
        num_users=512,
        num_items=256,
        port=free_port(),
        host="127.0.0.1",
    )
    feature_settings = FeatureSettings(
        name=unique_name,
        bootstrap_servers=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'features.db'}",
        port=free_port(),
    )
    events = list(SyntheticStream(SyntheticConfig(users=30, items=20, events=200)).events())
    ensure_topics(broker.bootstrap, [feature_settings.events_topic, feature_settings.dlq_topic])
    producer = EventProducer(broker.bootstrap, feature_settings.events_topic)
    for e in events[:100]:
        producer.send(e)
    producer.flush()
    send_raw(broker.bootstrap, feature_settings.events_topic, list(MALFORMED))
    for e in events[100:]:
        producer.send(e)
    producer.flush()
    total = len(events) + len(MALFORMED)

    stop = asyncio.Event()
    registry = CollectorRegistry()
    trainer = asyncio.create_task(
        run_service(trainer_settings, stop, handle_signals=False, registry=registry)
    )
    features = FeatureService(feature_settings)
    await features.start()
    try:

        async def both_past_the_end() -> bool:
            feature_done = await asyncio.to_thread(
                committed_offset,
                broker.bootstrap,
                feature_settings.consumer_group,
                feature_settings.events_topic,
            )
            # The trainer commits after its checkpoint, which follows any dead letter it sent.
            trainer_done = await asyncio.to_thread(
                committed_offset,
                broker.bootstrap,
                trainer_settings.group,
                trainer_settings.events_topic,
            )
            return feature_done == total and trainer_done == total

        await eventually(both_past_the_end, timeout=120.0)
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)
        await features.stop()

    assert registry.get_sample_value("freshrank_trainer_events_trained_total") == len(events)
    assert registry.get_sample_value("freshrank_trainer_events_dead_lettered_total") == len(
        MALFORMED
    )
    dead = read_all(broker.bootstrap, feature_settings.dlq_topic, len(MALFORMED))
    reasons = dead_letter_reasons(dead)  # asserts each source offset appears once
    assert len(dead) == len(MALFORMED)
    topic = feature_settings.events_topic
    assert sorted(reasons) == sorted(f"{topic}:0:{100 + i}" for i in range(len(MALFORMED)))
    by_value = {m.value(): header(m, ERROR_HEADER) for m in dead}
    for value, expected in MALFORMED.items():
        assert expected in by_value[value]
