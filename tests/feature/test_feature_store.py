"""The SQL feature store on SQLite and PostgreSQL: migrations, idempotency and its retention,
decay, history, and the driver-level read path."""

from __future__ import annotations

import contextlib
import math
import time

import psycopg
import pytest
from feature_helpers import event, history, libpq_dsn, snapshot, stream
from sqlalchemy import inspect, text

from freshrank.core.codec import EventType
from freshrank.feature.migrate import current_revision, head_revision, upgrade
from freshrank.feature.service import open_store
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import STORE_ERRORS, FeatureStore, ensure_schema

pytestmark = pytest.mark.integration


async def test_migrations_reach_head_and_rerun_as_no_op(store: FeatureStore) -> None:
    assert await current_revision(store.engine) == head_revision()
    await upgrade(store.engine)  # a second startup changes nothing
    assert await current_revision(store.engine) == head_revision()


async def test_replaying_the_stream_twice_gives_the_same_features(store: FeatureStore) -> None:
    events = stream(300)
    for start in range(0, len(events), 64):
        await store.apply(events[start : start + 64])
    once = await snapshot(store, events)
    # Redelivery in different batch boundaries, with duplicates inside one batch.
    replayed = await store.apply(events[::-1] + events[:10])
    assert replayed.applied == 0
    assert replayed.users == frozenset()
    assert await snapshot(store, events) == once
    assert once["counts"] == {"processed": 300, "user_events": 300, "item_events": 300}


async def test_duplicates_within_one_batch_count_once(store: FeatureStore) -> None:
    e = event(1, "alice", "book", 1_000)
    applied = await store.apply([e, e, e])
    assert applied.applied == 1
    (row,) = (await store.users(["alice"])).values()
    assert row.event_count == 1
    assert (await store.items(["book"]))["book"].event_count == 1


async def test_history_is_most_recent_first_and_bounded(store: FeatureStore) -> None:
    # history_length is 5 in these tests; event times deliberately out of arrival order.
    times = [5_000, 1_000, 7_000, 3_000, 9_000, 2_000, 8_000]
    await store.apply([event(n, "bob", f"item{n}", ts) for n, ts in enumerate(times[:4])])
    await store.apply([event(n + 4, "bob", f"item{n + 4}", ts) for n, ts in enumerate(times[4:])])
    row = (await store.users(["bob"]))["bob"]
    assert [h.timestamp_ms for h in history(row.history)] == [9_000, 8_000, 7_000, 5_000, 3_000]
    assert [h.item_id for h in history(row.history)][:2] == ["item4", "item6"]
    assert row.event_count == 7


async def test_history_keeps_event_types(store: FeatureStore) -> None:
    await store.apply(
        [
            event(1, "carol", "a", 1_000, EventType.VIEW),
            event(2, "carol", "a", 2_000, EventType.ADD_TO_CART),
            event(3, "carol", "a", 3_000, EventType.PURCHASE),
        ]
    )
    entries = history((await store.users(["carol"]))["carol"].history)
    assert [h.type for h in entries] == [EventType.PURCHASE, EventType.ADD_TO_CART, EventType.VIEW]


async def test_counters_decay_with_event_time_half_life(store: FeatureStore) -> None:
    # Half-life 1 s: two events 1 s apart -> 0.5 + 1 at the later event.
    await store.apply([event(1, "dan", "x", 10_000)])
    await store.apply([event(2, "dan", "x", 11_000)])
    assert (await store.items(["x"]))["x"].decayed == pytest.approx(1.5)
    # An unrelated event 2 s later moves the stream clock: reads decay to it.
    await store.apply([event(3, "erin", "y", 13_000)])
    assert (await store.items(["x"]))["x"].decayed == pytest.approx(1.5 * 0.25)
    assert (await store.users(["dan"]))["dan"].decayed == pytest.approx(1.5 * 0.25)


async def test_late_event_adds_its_decayed_weight_without_moving_time(store: FeatureStore) -> None:
    await store.apply([event(1, "fay", "z", 20_000)])
    await store.apply([event(2, "fay", "z", 19_000)])  # arrives late, 1 s older
    row = (await store.items(["z"]))["z"]
    assert row.decayed == pytest.approx(1.5)
    assert row.event_count == 2


async def test_popular_ranks_by_decayed_popularity(store: FeatureStore) -> None:
    # "old" got 4 events 4 s before "new" got 2: 4 * 2**-4 = 0.25 < 2.
    await store.apply([event(n, f"u{n}", "old", 10_000) for n in range(4)])
    await store.apply([event(n + 10, f"v{n}", "new", 14_000) for n in range(2)])
    await store.apply([event(20, "w", "mid", 13_000)])
    top = await store.popular(3)
    assert [r.item_id for r in top] == ["new", "mid", "old"]
    assert top[2].decayed == pytest.approx(4 * math.pow(0.5, 4))
    assert [r.event_count for r in top] == [2, 1, 4]


async def test_unknown_ids_are_absent_not_errors(store: FeatureStore) -> None:
    assert await store.users(["nobody"]) == {}
    assert await store.items(["nothing"]) == {}
    assert await store.popular(5) == []


async def test_clock_survives_a_restart(store: FeatureStore) -> None:
    await store.apply([event(1, "gus", "q", 42_000)])
    reopened = FeatureStore(store.engine, history_length=5, half_life_ms=1000.0)
    assert await reopened.load_clock() == 42_000


async def test_schema_changes_are_transactional(store: FeatureStore) -> None:
    # An interrupted migration must not leave tables behind without their version stamp
    # (SQLite's driver does not open a transaction before DDL unless we do).
    with contextlib.suppress(RuntimeError):
        async with store.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE feature_half_done (x INTEGER)"))
            raise RuntimeError("killed half-way")
    async with store.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
    assert "feature_half_done" not in tables
    assert "feature_users" in tables


async def test_processed_ids_are_pruned_after_the_window_in_stream_time(
    store: FeatureStore,
) -> None:
    window_ms = 10_000
    old = [event(n, "hal", "a", 1_000 + n) for n in range(3)]
    await store.apply(old)
    await store.apply([event(10, "hal", "b", 8_000)])
    assert await store.prune_processed(window_ms) == 0  # clock 8 s: nothing is 10 s old
    recent = [event(20, "ivy", "c", 12_000), event(21, "ivy", "c", 12_500)]
    await store.apply(recent)
    # Clock 12.5 s: ids claimed at stream time < 2.5 s go (the first batch, claimed at 1.002 s).
    assert await store.prune_processed(window_ms) == 3
    assert (await store.counts())["processed"] == 3
    assert await store.prune_processed(window_ms) == 0
    # Inside the window a redelivery is still a no-op...
    assert (await store.apply([event(10, "hal", "b", 8_000), *recent])).applied == 0
    # ...beyond it an id is forgotten: the documented bound (redelivery comes from the
    # uncommitted tail, well inside a window of days).
    assert (await store.apply(old[:1])).applied == 1


async def test_ids_are_claimed_at_the_stream_clock_not_their_event_time(
    store: FeatureStore,
) -> None:
    await store.apply([event(1, "jon", "a", 50_000)])
    late = event(2, "jon", "a", 1_000)  # event time far behind the clock
    await store.apply([late])
    assert await store.prune_processed(10_000) == 0  # claimed at 50 s, not 1 s
    assert (await store.apply([late])).applied == 0


async def test_pruning_is_bounded_per_call(store: FeatureStore) -> None:
    await store.apply([event(n, f"u{n}", "a", 1_000 + n) for n in range(25)])
    await store.apply([event(100, "kim", "b", 100_000)])
    assert await store.prune_processed(10_000, limit=10) == 10
    assert await store.prune_processed(10_000, limit=10) == 10
    assert await store.prune_processed(10_000, limit=10) == 5
    assert (await store.counts())["processed"] == 1


async def test_upgrade_keeps_existing_ids_for_a_full_window(
    feature_settings: FeatureSettings,
) -> None:
    store = await open_store(feature_settings, migrate=False)
    try:
        await ensure_schema(store.engine, feature_settings.db_schema)
        await upgrade(store.engine, "0001")
        async with store.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO feature_items (item_id, event_count, decayed, updated_ms)"
                    " VALUES ('a', 1, 1.0, 77000)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO feature_processed_events (event_id, ingested_ms)"
                    " VALUES ('before-upgrade', 1)"
                )
            )
        await upgrade(store.engine)
        await store.load_clock()
        async with store.engine.connect() as connection:
            claimed = (
                await connection.execute(text("SELECT stream_ms FROM feature_processed_events"))
            ).scalar()
        assert claimed == 77_000
        assert await store.prune_processed(10_000) == 0
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_broken_read_connection_is_dropped_not_reused(
    store: FeatureStore, postgres_url: str
) -> None:
    # PostgreSQL only: its read path talks to the driver, past SQLAlchemy's error handling.
    await store.apply([event(1, "lea", "a", 1_000)])
    async with store._reader.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        backend_pid = driver.info.backend_pid
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(postgres_url), autocommit=True
    ) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
    with pytest.raises(STORE_ERRORS):
        await store.users(["lea"])
    assert (await store.users(["lea"]))["lea"].event_count == 1


async def test_counters_thousands_of_half_lives_apart_do_not_underflow(
    store: FeatureStore,
) -> None:
    # Half-life 1 s: 10^7 half-lives apart. PostgreSQL's power() raised "underflow" on the
    # merge (ingest stuck) and on every popularity read (503 for good).
    await store.apply([event(1, "old", "fossil", 1_000), event(2, "old", "hot", 1_000)])
    await store.apply([event(3, "new", "hot", 10_000_001_000)])
    assert [item.item_id for item in await store.popular(2)] == ["hot", "fossil"]
    assert (await store.items(["fossil"]))["fossil"].decayed == pytest.approx(0.0)
    assert (await store.items(["hot"]))["hot"].event_count == 2


async def test_a_future_dated_event_counts_at_its_record_time(store: FeatureStore) -> None:
    now = 1_700_000_000_000
    await store.apply([event(n, "amy", "a", now - 1_000 + n) for n in range(5)])
    popular_before = await store.popular(5)
    # Microseconds: taken as happening when recorded, so the clock (decay, popularity,
    # pruning) stays where the stream is.
    applied = await store.apply([event(9, "amy", "b", now * 1000)], not_after_ms=now)
    assert applied.clock_ms == store.clock_ms == now
    assert await store.prune_processed(10_000) == 0
    # "a" last changed at now - 996 ms: decayed by 0.996 of a half-life, not by 1.7e15 ms.
    decayed = (await store.items(["a"]))["a"].decayed
    assert decayed == pytest.approx(popular_before[0].decayed * 0.5**0.996, rel=1e-6)
    assert history((await store.users(["amy"]))["amy"].history)[0].timestamp_ms == now
    # Without a record time, this machine's clock is the bound.
    await store.apply([event(10, "amy", "c", 2**62)])
    assert store.clock_ms <= int(time.time() * 1000)
    assert await store.load_clock() <= int(time.time() * 1000)
