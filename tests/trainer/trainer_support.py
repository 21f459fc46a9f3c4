"""Helpers of the trainer tests: small settings, producing a stream, reading topics back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import AsyncConsumer, EventProducer, ensure_topics
from freshrank.embedded import EmbeddedBroker
from freshrank.trainer.settings import TrainerSettings

SMALL_MODEL: dict[str, Any] = {
    "architecture": "mf",
    "dim": 16,
    "history_len": 8,
    "num_users": 512,
    "num_items": 256,
}


def small_settings(
    broker: EmbeddedBroker, name: str, tmp_path: Path, **extra: Any
) -> TrainerSettings:
    values: dict[str, Any] = {
        "name": name,
        "bootstrap_servers": broker.bootstrap,
        "model_repository": str(tmp_path / "models"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "triton_url": "",
        "batch_size": 64,
        "poll_timeout_s": 0.1,
        "checkpoint_interval_s": 0.5,
        "export_interval_s": 3600.0,
        "min_events": 0,
        "max_regression": 1.0,
        "device": "cpu",
        **SMALL_MODEL,
    }
    values.update(extra)
    return TrainerSettings(**values)


def settings_env(settings: TrainerSettings) -> dict[str, str]:
    """The same settings as ``FRESHRANK_*`` environment variables (for subprocesses)."""
    return settings.as_env()


def produce(
    broker: EmbeddedBroker,
    topic: str,
    events: Iterable[InteractionEvent],
    raw: Sequence[bytes] = (),
) -> int:
    ensure_topics(broker.bootstrap, [topic])
    producer = EventProducer(broker.bootstrap, topic)
    count = 0
    for event in events:
        producer.send(event)
        count += 1
    for value in raw:
        producer.send_raw(value, key="bad")
    producer.flush()
    return count


async def read_topic(broker: EmbeddedBroker, topic: str, group: str, want: int) -> list[Message]:
    consumer = AsyncConsumer(broker.bootstrap, group, [topic])
    got: list[Message] = []
    try:
        for _ in range(80):
            got.extend(await consumer.poll_batch(500, 0.25))
            if len(got) >= want:
                break
    finally:
        await consumer.close()
    return got
