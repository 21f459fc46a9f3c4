"""Writing events to the real broker and reading topics and group offsets back (feature and
chaos tests)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from freshrank.core.codec import EventType, InteractionEvent
from freshrank.core.kafka import ERROR_HEADER, SOURCE_HEADER, EventProducer, consumer_config


def produce(bootstrap: str, topic: str, events: Sequence[InteractionEvent]) -> None:
    producer = EventProducer(bootstrap, topic)
    for e in events:
        producer.send(e)
    producer.flush()


def raw_event(**fields: object) -> bytes:
    """An event's bytes as a producer without the contract (an older codec) would send:
    ``fields`` over a valid event, none of them checked."""
    values: dict[str, object] = {
        "event_id": "bad",
        "user_id": "u0",
        "item_id": "i0",
        "type": EventType.CLICK,
        "timestamp_ms": int(time.time() * 1000),
    }
    values.update(fields)
    return InteractionEvent(**values).SerializeToString()  # type: ignore[arg-type]


def send_raw(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = EventProducer(bootstrap, topic)
    for value in values:
        producer.send_raw(value, key="bad")
    producer.flush()


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        [partition] = consumer.committed([TopicPartition(topic, 0)], 10)
        return int(partition.offset)
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    """The messages of partition 0 of ``topic``: at least ``expected`` (waited for), plus any
    more already there (a duplicate would be: the writers flush before committing).

    (Tansu reports a high watermark of the last batch's base offset + 1, so "read up to the
    end offset" cannot be used.)"""
    consumer = Consumer(consumer_config(bootstrap, f"{topic}-reader-{time.monotonic_ns()}"))
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(message)
            if len(found) >= expected and quiet_until is None:
                quiet_until = time.monotonic() + 1.0  # drain what else is there
            if quiet_until is not None and time.monotonic() > quiet_until:
                break
    finally:
        consumer.close()
    assert len(found) >= expected, f"read {len(found)} of {expected} messages of {topic}"
    return found


def header(message: Message, name: str) -> str:
    return dict(message.headers() or [])[name].decode()


def dead_letter_reasons(messages: Sequence[Message]) -> dict[str, str]:
    """``freshrank-source`` -> ``freshrank-error`` of dead letters; asserts each source once."""
    sources = [header(m, SOURCE_HEADER) for m in messages]
    assert len(sources) == len(set(sources)), f"a message was dead-lettered twice: {sources}"
    return {header(m, SOURCE_HEADER): header(m, ERROR_HEADER) for m in messages}
