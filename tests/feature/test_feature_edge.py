"""Bad input at the ingest edge, on a real broker into SQLite and PostgreSQL: events the codec
once accepted but the store refuses, future-dated events, a row the database refuses. Each is
dead-lettered once with its reason, the rest is applied, and ingest commits past it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from feature_helpers import libpq_dsn, running_service
from kafka_support import (
    committed_offset,
    dead_letter_reasons,
    produce,
    raw_event,
    read_all,
    send_raw,
)
from sqlalchemy import text
from waiting import eventually

from freshrank.core.codec import EventType, InteractionEvent, make_event
from freshrank.embedded import EmbeddedBroker
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(time.time() * 1000)


def _events(count: int, *, start_ms: int, prefix: str = "g") -> list[InteractionEvent]:
    return [
        make_event(
            event_id=f"{prefix}{i}",
            user_id=f"u{i % 5}",
            item_id=f"i{i % 7}",
            type=EventType.CLICK,
            timestamp_ms=start_ms + i * 10,
        )
        for i in range(count)
    ]


@pytest.fixture
async def service(
    broker: EmbeddedBroker, unique_name: str, feature_settings: FeatureSettings
) -> AsyncIterator[FeatureService]:
    async with running_service(
        broker.bootstrap,
        feature_settings,
        name=unique_name,
        ingest_batch=100,
        processed_retention_s=3600.0,
    ) as running:
        assert running.ingester is not None
        running.ingester.prune_interval_s = 0.0  # prune after every batch: any clock jump shows
        yield running


async def _committed_to_end(service: FeatureService, broker: EmbeddedBroker, end: int) -> None:
    """Wait until the group's committed offset is ``end`` (ingest moved past everything)."""
    s = service.settings

    async def at_end() -> bool:
        committed = await asyncio.to_thread(
            committed_offset, broker.bootstrap, s.consumer_group, s.events_topic
        )
        return committed == end

    await eventually(at_end)


async def test_events_postgresql_refused_are_dead_lettered_once_and_ingest_moves_on(
    broker: EmbeddedBroker, service: FeatureService
) -> None:
    # Each of these stopped PostgreSQL ingest for good (DataError retried as an outage).
    s, store = service.settings, service.store
    assert store is not None
    start = _now_ms() - 60_000
    produce(broker.bootstrap, s.events_topic, _events(50, start_ms=start))
    bad = {
        "long user_id": raw_event(event_id="b1", user_id="u" * 301),
        "NUL in item_id": raw_event(event_id="b2", item_id="item\x00one"),
        "microseconds": raw_event(event_id="b3", timestamp_ms=_now_ms() * 1000),
    }
    send_raw(broker.bootstrap, s.events_topic, list(bad.values()))
    produce(broker.bootstrap, s.events_topic, _events(50, start_ms=start + 500, prefix="h"))

    await _committed_to_end(service, broker, 103)
    assert (await store.counts())["processed"] == 100
    reasons = dead_letter_reasons(read_all(broker.bootstrap, s.dlq_topic, 3))
    assert sorted(reasons) == [f"{s.events_topic}:0:{offset}" for offset in (50, 51, 52)]
    assert "user_id is 301 bytes" in reasons[f"{s.events_topic}:0:50"]
    assert "item_id contains a control character" in reasons[f"{s.events_topic}:0:51"]
    assert "microseconds instead of milliseconds" in reasons[f"{s.events_topic}:0:52"]
    ready = await _get(service, "/readyz")
    assert ready[0] == 200, ready


async def _get(service: FeatureService, path: str) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{service.settings.port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_future_dated_events_move_neither_clock_popularity_nor_pruning(
    broker: EmbeddedBroker, service: FeatureService
) -> None:
    s, store = service.settings, service.store
    assert store is not None
    stream = _events(100, start_ms=_now_ms() - 5_000)
    produce(broker.bootstrap, s.events_topic, stream)
    await _committed_to_end(service, broker, 100)
    clock = store.clock_ms
    assert clock == stream[-1].timestamp_ms

    # Microseconds and a clock hours ahead: the contract rejects both at the edge. A producer
    # clock 30 minutes ahead is within the window: taken as happening when it was recorded.
    send_raw(
        broker.bootstrap,
        s.events_topic,
        [
            raw_event(event_id="f1", item_id="hijack", timestamp_ms=_now_ms() * 1000),
            raw_event(event_id="f2", item_id="hijack", timestamp_ms=_now_ms() + 5 * 3_600_000),
        ],
    )
    skewed = _now_ms() + 30 * 60_000
    send_raw(broker.bootstrap, s.events_topic, [raw_event(event_id="f3", timestamp_ms=skewed)])
    await _committed_to_end(service, broker, 103)

    assert clock <= store.clock_ms <= _now_ms()  # at most the record's time: not 30 min ahead
    assert await store.load_clock() <= _now_ms()
    async with store.engine.connect() as connection:
        latest = (
            await connection.execute(text("SELECT MAX(updated_ms) FROM feature_items"))
        ).scalar()
    assert latest is not None
    assert latest < skewed
    assert (await store.counts())["processed"] == 101  # nothing pruned by a jump of the clock
    assert service.ingester is not None
    assert service.ingester.pruned == 0
    status, body = await _get(service, "/v1/items:popular?k=3")
    assert status == 200, body
    assert "hijack" not in str(body)
    assert len(dead_letter_reasons(read_all(broker.bootstrap, s.dlq_topic, 2))) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_row_the_database_refuses_is_isolated_dead_lettered_and_passed(
    broker: EmbeddedBroker, service: FeatureService, postgres_url: str
) -> None:
    # A verdict only the database has (a constraint the codec knows nothing of): the batch is
    # bisected, the refused event dead-lettered with the database's reason, the rest applied.
    s, store = service.settings, service.store
    assert store is not None
    import psycopg

    with psycopg.connect(libpq_dsn(postgres_url), autocommit=True) as admin:
        admin.execute(
            f'ALTER TABLE "{s.db_schema}".feature_users'
            " ADD CONSTRAINT no_mallory CHECK (user_id <> 'mallory')"
        )
    events = _events(60, start_ms=_now_ms() - 60_000)
    refused = make_event(
        event_id="m1", user_id="mallory", item_id="i1", type=EventType.VIEW,
        timestamp_ms=events[30].timestamp_ms,
    )  # fmt: skip
    produce(broker.bootstrap, s.events_topic, [*events[:30], refused, *events[30:]])
    await _committed_to_end(service, broker, 61)
    assert (await store.counts())["processed"] == 60
    reasons = dead_letter_reasons(read_all(broker.bootstrap, s.dlq_topic, 1))
    assert list(reasons) == [f"{s.events_topic}:0:30"]
    assert "feature store refused the event: CheckViolation" in reasons[f"{s.events_topic}:0:30"]
    assert service.ingester is not None
    assert service.ingester.refused == 1
