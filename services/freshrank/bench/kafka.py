"""Broker benchmark: produce->consume through our helpers vs bare confluent-kafka.

Both sides move the same events through the same broker: ours with the codec (validation),
trace headers and the async batch consumer; the peer with plain protobuf and a bare
Producer/Consumer. Each round uses a fresh topic; rounds alternate; medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from freshrank.bench.report import BenchTable

if TYPE_CHECKING:
    from freshrank.core.codec import InteractionEvent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=50_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median is reported)")
    parser.add_argument(
        "--bootstrap-servers", default="", help="use this broker instead of an embedded one"
    )


def run(args: argparse.Namespace) -> int:
    from freshrank.embedded import EmbeddedBroker
    from freshrank.sim import SyntheticConfig, SyntheticStream

    events = list(SyntheticStream(SyntheticConfig(events=args.events)).events())
    if args.bootstrap_servers:
        return _report(_measure(args.bootstrap_servers, events, args.rounds), args)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        return _report(_measure(broker.bootstrap, events, args.rounds), args)


def _report(results: dict[str, list[float]], args: argparse.Namespace) -> int:
    ours = args.events / statistics.median(results["ours"])
    bare = args.events / statistics.median(results["bare"])
    table = BenchTable("kafka: produce->consume, events/s (median)", peer="bare confluent-kafka")
    table.add("produce->consume", ours, bare, "events/s")
    table.print()
    table.write_json("kafka", {"events": args.events, "rounds": args.rounds, "seconds": results})
    return 0


def _measure(bootstrap: str, events: list, rounds: int) -> dict[str, list[float]]:  # type: ignore[type-arg]
    results: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(rounds):
        results["ours"].append(asyncio.run(_ours(bootstrap, events)))
        results["bare"].append(_bare(bootstrap, events))
    return results


def _topic(bootstrap: str) -> str:
    from freshrank.core.kafka import ensure_topics

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic])
    return topic


async def _ours(bootstrap: str, events: list[InteractionEvent]) -> float:
    from freshrank.core.kafka import AsyncConsumer, EventProducer, decode_batch

    topic = _topic(bootstrap)
    consumer = AsyncConsumer(bootstrap, f"{topic}-g", [topic])
    start = time.perf_counter()
    producer = EventProducer(bootstrap, topic)
    for event in events:
        producer.send(event)
    await producer.flush_async()
    received = 0
    while received < len(events):
        batch = decode_batch(await consumer.poll_batch(5000, 0.5))
        received += len(batch.events) + len(batch.malformed)
    elapsed = time.perf_counter() - start
    await consumer.close()
    return elapsed


def _bare(bootstrap: str, events: list[InteractionEvent]) -> float:
    from confluent_kafka import Consumer, Producer

    from freshrank.core.kafka import consumer_config, producer_config
    from freshrank.v1.events_pb2 import InteractionEvent

    topic = _topic(bootstrap)
    consumer = Consumer(consumer_config(bootstrap, f"{topic}-g"))
    consumer.subscribe([topic])
    start = time.perf_counter()
    producer = Producer(producer_config(bootstrap))
    for event in events:
        while True:
            try:
                producer.produce(topic, value=event.SerializeToString(), key=event.user_id)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(30)
    received = 0
    while received < len(events):
        for message in consumer.consume(5000, 0.5):
            if message.error() is None:
                InteractionEvent.FromString(message.value() or b"")
                received += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed
