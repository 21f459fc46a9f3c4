"""Ingest from a real broker into SQLite and PostgreSQL: replay, dead letters, invalidation, and
a SIGKILLed ingester process that restarts without losing or doubling an event."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from feature_helpers import event, running_service, snapshot, stream
from kafka_support import produce
from waiting import eventually

from freshrank.core.codec import InteractionEvent
from freshrank.core.feature_client import FeatureClient
from freshrank.core.kafka import ERROR_HEADER, EventProducer, consumer_config, ensure_topics
from freshrank.embedded import EmbeddedBroker, ManagedProcess, free_port
from freshrank.feature.ingest import Ingester
from freshrank.feature.service import FeatureService, open_store
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import FeatureStore

pytestmark = pytest.mark.integration


async def _reference(
    tmp_path: Path, events: list[InteractionEvent], **settings: object
) -> dict[str, object]:
    """What a store that applied ``events`` exactly once, in one go, holds."""
    config = FeatureSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}",
        **settings,  # type: ignore[arg-type]
    )
    reference = await open_store(config)
    await reference.apply(events)
    expected: dict[str, object] = await snapshot(reference, events)
    await reference.close()
    return expected


@pytest.fixture
async def service(
    broker: EmbeddedBroker, unique_name: str, feature_settings: FeatureSettings
) -> AsyncIterator[FeatureService]:
    async with running_service(
        broker.bootstrap,
        feature_settings,
        name=unique_name,
        cache_ttl_s=600.0,  # only the stream may refresh what the API serves here
    ) as running:
        yield running


async def test_stream_replayed_twice_gives_the_same_features(
    broker: EmbeddedBroker, service: FeatureService, tmp_path: Path
) -> None:
    s, ingester, store = service.settings, service.ingester, service.store
    assert ingester is not None
    assert store is not None
    events = stream(400)
    expected = await _reference(tmp_path, events, history_len=5, half_life_s=1.0)
    for attempt in (1, 2):  # the second pass is a full redelivery of the same events
        produce(broker.bootstrap, s.events_topic, events)
        await eventually(lambda n=attempt: _committed(service, 400 * n))
        assert await snapshot(store, events) == expected
    assert ingester.applied_events == 400


async def _committed(service: FeatureService, messages: int) -> bool:
    assert service.ingester is not None
    return service.ingester.committed_messages >= messages


async def test_malformed_events_go_to_dead_letters_and_good_ones_apply(
    broker: EmbeddedBroker, service: FeatureService
) -> None:
    s = service.settings
    good = stream(5)
    producer = EventProducer(broker.bootstrap, s.events_topic)
    producer.send_raw(b"\xff\x00garbage", key="u0")
    for e in good:
        producer.send(e)
    producer.flush()
    await eventually(lambda: _committed(service, 6))
    assert service.store is not None
    assert (await service.store.counts())["processed"] == 5
    dead = _read_all(broker, s.dlq_topic, 1)
    assert dead[0][0] == b"\xff\x00garbage"
    assert b"not a protobuf" in dead[0][1]


def _read_all(broker: EmbeddedBroker, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(consumer_config(broker.bootstrap, f"{topic}-reader"))
    consumer.subscribe([topic])
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while len(found) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            headers = dict(message.headers() or [])
            reason = headers.get(ERROR_HEADER) or b""
            found.append((message.value() or b"", reason if isinstance(reason, bytes) else b""))
    consumer.close()
    return found


async def test_api_reflects_the_stream_through_the_cache(
    broker: EmbeddedBroker, service: FeatureService
) -> None:
    s = service.settings
    events = stream(3, users=1)
    produce(broker.bootstrap, s.events_topic, events[:2])
    await eventually(lambda: _committed(service, 2))
    async with FeatureClient(f"http://127.0.0.1:{s.port}") as client:
        assert (await client.user("u0")).event_count == 2  # now cached (TTL 600 s)
        produce(broker.bootstrap, s.events_topic, events[2:])
        await eventually(lambda: _committed(service, 3))
        fresh = await client.user("u0")
        assert fresh.event_count == 3
        assert fresh.history[0].item_id == events[2].item_id


async def test_ingest_prunes_event_ids_beyond_the_retention_window(
    broker: EmbeddedBroker, unique_name: str, feature_settings: FeatureSettings
) -> None:
    settings = feature_settings.model_copy(
        update={
            "name": unique_name,
            "bootstrap_servers": broker.bootstrap,
            "port": free_port(),
            "processed_retention_s": 1.0,  # of stream time; the first round spans 2 s
        }
    )
    ensure_topics(broker.bootstrap, [settings.events_topic, settings.dlq_topic])
    service = FeatureService(settings)
    await service.start()
    try:
        assert service.ingester is not None
        assert service.store is not None
        service.ingester.prune_interval_s = 0.0  # after every batch
        first = stream(200)
        produce(broker.bootstrap, settings.events_topic, first)
        await eventually(lambda: _committed(service, 200))
        later = event(1, "u0", "i0", first[-1].timestamp_ms + 10_000)
        produce(broker.bootstrap, settings.events_topic, [later])
        # Pruning runs after the batch's commit: wait for it to land, not for the commit (on a
        # loaded machine the check ran between the two and saw pruned == 0).
        ingester, store = service.ingester, service.store
        await eventually(lambda: _pruned_at_least(ingester, 200))
        assert ingester.pruned == 200
        assert await store.counts() == {
            "processed": 1,
            "user_events": 201,
            "item_events": 201,
        }
    finally:
        await service.stop()


async def _pruned_at_least(ingester: Ingester, count: int) -> bool:
    return ingester.pruned >= count


async def test_ingester_killed_mid_stream_restarts_without_loss_or_doubles(
    broker: EmbeddedBroker, unique_name: str, feature_settings: FeatureSettings, tmp_path: Path
) -> None:
    total = 6000
    events = stream(total, users=50, items=40)
    s = feature_settings
    ensure_topics(broker.bootstrap, [f"{unique_name}.events", f"{unique_name}.events.dlq"])
    produce(broker.bootstrap, f"{unique_name}.events", events)
    argv = [
        sys.executable, "-m", "freshrank.cli", "feature",
        "--name", unique_name,
        "--bootstrap-servers", broker.bootstrap,
        "--database-url", s.database_url.get_secret_value(),
        "--db-schema", s.db_schema,
        "--port", str(free_port()),
        "--history-len", str(s.history_len),
        "--half-life-s", str(s.half_life_s),
        "--ingest-batch", "100",  # many small transactions: the kill lands mid-stream
    ]  # fmt: skip
    store = await open_store(s)
    try:
        first = ManagedProcess("feature", argv, log_path=tmp_path / "feature-1.log")
        first.start()
        await eventually(lambda: _processed_at_least(store, 500), timeout=90)
        first.kill()
        at_kill = (await store.counts())["processed"]
        assert 0 < at_kill < total, f"kill did not land mid-stream ({at_kill} of {total})"

        second = ManagedProcess("feature", argv, log_path=tmp_path / "feature-2.log")
        second.start()
        try:
            await eventually(lambda: _processed_at_least(store, total), timeout=120)
            await asyncio.sleep(1.0)  # anything doubled would land by now
        finally:
            second.stop()
        expected = await _reference(
            tmp_path, events, history_len=s.history_len, half_life_s=s.half_life_s
        )
        await store.load_clock()  # this store is another reader: catch up with the stream clock
        assert await snapshot(store, events) == expected
    finally:
        await store.close()


async def _processed_at_least(store: FeatureStore, count: int) -> bool:
    return (await store.counts())["processed"] >= count
