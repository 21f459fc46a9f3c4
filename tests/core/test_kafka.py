"""Kafka helpers against the real embedded broker."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freshrank.core.codec import EventType, make_event
from freshrank.core.kafka import (
    ERROR_HEADER,
    SOURCE_HEADER,
    AsyncConsumer,
    DeadLetters,
    EventProducer,
    decode_batch,
    ensure_topics,
    next_offsets,
    producer_config,
)
from freshrank.core.telemetry import context_from_headers
from freshrank.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


def _events(n: int, prefix: str = "e") -> list:  # type: ignore[type-arg]
    return [
        make_event(
            event_id=f"{prefix}{i}",
            user_id=f"u{i % 7}",
            item_id=f"i{i % 13}",
            type=EventType.VIEW,
            timestamp_ms=1_700_000_000_000 + i,
        )
        for i in range(n)
    ]


async def _drain(consumer: AsyncConsumer, want: int, rounds: int = 60) -> list[Message]:
    got: list[Message] = []
    for _ in range(rounds):
        got.extend(await consumer.poll_batch(500, 0.5))
        if len(got) >= want:
            break
    return got


async def test_group_commit_restart_resumes_without_loss_or_duplicates(
    broker: EmbeddedBroker, unique_name: str
) -> None:
    topic = f"{unique_name}.events"
    ensure_topics(broker.bootstrap, [topic], partitions=2)
    producer = EventProducer(broker.bootstrap, topic)
    for event in _events(300):
        producer.send(event)
    producer.flush()

    first = AsyncConsumer(broker.bootstrap, f"{unique_name}-g", [topic])
    messages = await _drain(first, 300)
    assert len(messages) == 300
    processed = messages[:150]  # "crash" after handling half: commit only those
    await first.commit(next_offsets(processed))
    await first.close()

    second = AsyncConsumer(broker.bootstrap, f"{unique_name}-g", [topic])
    rest = await _drain(second, 150)
    await second.commit(next_offsets(rest))
    extra = await second.poll_batch(500, 1.0)
    await second.close()

    ids = [e.event_id for _, e in decode_batch([*processed, *rest, *extra]).events]
    committed_first = {e.event_id for _, e in decode_batch(processed).events}
    redelivered = [
        i for i in (e.event_id for _, e in decode_batch(rest).events) if i in committed_first
    ]
    assert redelivered == [], "committed events were delivered again"
    assert sorted(ids) == sorted(e.event_id for e in _events(300))
    assert len(ids) == len(set(ids))


async def test_malformed_messages_go_to_dead_letters_with_reason(
    broker: EmbeddedBroker, unique_name: str
) -> None:
    topic, dlq = f"{unique_name}.events", f"{unique_name}.events.dlq"
    ensure_topics(broker.bootstrap, [topic, dlq])
    producer = EventProducer(broker.bootstrap, topic)
    producer.send(_events(1)[0])
    producer.send_raw(b"\x08\x96\x01garbage\xff", key="u1")
    producer.flush()

    consumer = AsyncConsumer(broker.bootstrap, f"{unique_name}-g", [topic])
    batch = decode_batch(await _drain(consumer, 2))
    await consumer.close()
    assert [e.event_id for _, e in batch.events] == ["e0"]
    assert len(batch.malformed) == 1
    message, reason = batch.malformed[0]

    dead_letters = DeadLetters(broker.bootstrap, dlq)
    dead_letters.publish(message, reason)
    dead_letters.flush()
    reader = AsyncConsumer(broker.bootstrap, f"{unique_name}-dlq", [dlq])
    [dead] = await _drain(reader, 1)
    await reader.close()
    assert dead.value() == b"\x08\x96\x01garbage\xff"
    headers = dict(dead.headers() or [])
    assert headers[ERROR_HEADER].decode() == reason
    # The de-duplication key of an at-least-once dead letter: where the original lives.
    assert headers[SOURCE_HEADER].decode() == f"{topic}:0:{message.offset()}"


async def test_trace_context_travels_in_headers(
    broker: EmbeddedBroker, unique_name: str, span_exporter: InMemorySpanExporter
) -> None:
    topic = f"{unique_name}.events"
    ensure_topics(broker.bootstrap, [topic])
    producer = EventProducer(broker.bootstrap, topic)
    with trace.get_tracer("test").start_as_current_span("produce") as span:
        producer.send(_events(1)[0])
        trace_id = span.get_span_context().trace_id
    producer.flush()
    consumer = AsyncConsumer(broker.bootstrap, f"{unique_name}-g", [topic])
    [message] = await _drain(consumer, 1)
    await consumer.close()
    remote = trace.get_current_span(context_from_headers(message.headers())).get_span_context()
    assert remote.trace_id == trace_id


def test_producers_are_idempotent_and_the_embedded_broker_grants_a_producer_id(
    broker: EmbeddedBroker, unique_name: str
) -> None:
    """Retries cannot write a batch twice: librdkafka gets a producer id (InitProducerId)."""
    topic = f"{unique_name}.events"
    ensure_topics(broker.bootstrap, [topic])
    assert producer_config(broker.bootstrap)["enable.idempotence"] is True
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    rdkafka_log = logging.getLogger(f"rdkafka.{unique_name}")
    rdkafka_log.setLevel(logging.DEBUG)
    rdkafka_log.addHandler(Capture())
    producer = EventProducer(broker.bootstrap, topic, debug="eos", logger=rdkafka_log)
    for event in _events(20):
        producer.send(event)
    producer.flush()
    assert any("Acquired PID" in line for line in lines), lines[-20:]
