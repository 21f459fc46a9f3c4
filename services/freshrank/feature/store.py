"""The feature store: SQLAlchemy 2 (async) over PostgreSQL (psycopg 3) or SQLite.

Writes: one transaction per ingest batch records the batch's event ids in
``feature_processed_events`` (unique key; ``INSERT .. ON CONFLICT DO NOTHING RETURNING``) and
applies only the events that were new, so a redelivered event changes nothing. Item counters
are merged in SQL (``ON CONFLICT DO UPDATE`` with the decay in the expression) because items
are shared by every partition; a user's row (counters plus the last N history entries) is
read-modified-written under a row lock, since one partition owns each user (key = user id).

The clock: the latest event time applied, but no event counts as later than its Kafka record
(the ingester passes the batch's record time) nor than this machine's clock: an event dated in
the future (a producer's broken clock or unit; the codec's contract rejects far-future ones
at the edge) is taken as happening when it was recorded, so no single event can move the
clock, and with it every decayed read, the popularity ranking and the pruning of processed
ids, ahead of real time. Decay exponents are capped (``decay.MAX_HALF_LIVES``) so counters
decades apart never underflow PostgreSQL's ``power()``.

Errors: ``is_data_error`` tells what the database refused because of the data (that event can
never be applied: the ingester dead-letters it) from everything else (an outage: retry).
Reads go through a circuit breaker (``freshrank.feature.breaker``) so they fail fast while the
database is down.

Retention of processed ids: each id records the stream clock (latest event time applied) when
it was claimed, and ``prune_processed`` forgets ids older than a window of stream time. A
redelivery comes from the uncommitted tail of a partition (offsets are committed right after
the transaction), so it reaches the store within a consumer-group rebalance of the failure,
while the stream clock has moved by about that much; producer retries land next to the
original. A window of days (``processed_retention_s``) covers both with a wide margin; a
replay of the log from the start (offsets reset by hand) is outside it and is applied again,
as it would be into a fresh store. Stream time, not wall time, so a paused or replayed stream
keeps its ids for the same span of events, and the test can drive it.

Reads: one primary-key lookup per batch (``= ANY(array)`` on PostgreSQL, ``IN`` on SQLite),
in autocommit; counters are decayed to the stream clock (the latest event time applied, or
seen in the store) at read time. On PostgreSQL the batch read is the API's cache-miss path, so
it skips SQLAlchemy's statement and row layers: a fixed statement, prepared, on the pooled
psycopg connection, with binary parameters and results, in its own span (about 0.5 ms of this
process's CPU per 100-user read instead of 1.9 ms through a Core ``select``, measured on this
machine; ``freshrank bench feature`` shows the effect on the cache-off API).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import psycopg
import sqlalchemy.ext.asyncio as sa_asyncio
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    LargeBinary,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    case,
    delete,
    event,
    func,
    literal,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from freshrank.core.codec import InteractionEvent
from freshrank.feature.breaker import CircuitBreaker, StoreUnavailable
from freshrank.feature.decay import MAX_HALF_LIVES, decay, fold, merge
from freshrank.v1 import features_pb2

__all__ = [
    "STORE_ERRORS",
    "AppliedBatch",
    "FeatureStore",
    "ItemRow",
    "StoreUnavailable",
    "UserRow",
    "create_engine",
    "is_data_error",
    "is_outage",
    "metadata",
]

T = TypeVar("T")

metadata = MetaData()
processed_events = Table(
    "feature_processed_events",
    metadata,
    Column("event_id", String(256), primary_key=True),  # codec.MAX_ID_BYTES
    Column("ingested_ms", BigInteger, nullable=False),
    Column("stream_ms", BigInteger, nullable=False),  # stream clock when claimed (retention)
)
users = Table(
    "feature_users",
    metadata,
    Column("user_id", String(256), primary_key=True),
    Column("event_count", BigInteger, nullable=False),
    Column("decayed", Double, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("history", LargeBinary, nullable=False),
)
items = Table(
    "feature_items",
    metadata,
    Column("item_id", String(256), primary_key=True),
    Column("event_count", BigInteger, nullable=False),
    Column("decayed", Double, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# What an unreachable or failing store raises (SQLAlchemy wraps the driver, except on the
# PostgreSQL read path, which talks to psycopg directly).
STORE_ERRORS = (SQLAlchemyError, psycopg.Error, OSError, TimeoutError, StoreUnavailable)
# The database refused the data (a value too long, a NUL, out of range, a constraint): the same
# statement fails however often it is retried.
_DATA_ERRORS = (sa_exc.DataError, sa_exc.IntegrityError, psycopg.DataError, psycopg.IntegrityError)
# The database is unreachable, gone, overloaded or too slow: the same statement may succeed later.
_OUTAGE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)
# A read (one indexed statement, ~1 ms) slower than this counts as the store failing: it is
# given up and the breaker hears of it, so a hung database is found within this.
READ_TIMEOUT_S = 0.5
# Keeps each multi-row statement well under SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500
_tracer = trace.get_tracer("freshrank.feature")
_USER_COLUMNS = ("user_id", "event_count", "decayed", "updated_ms", "history")
_ITEM_COLUMNS = ("item_id", "event_count", "decayed", "updated_ms")


# Rows are named tuples: a batch read builds one per id, at half a frozen dataclass's cost.
class UserRow(NamedTuple):
    user_id: str
    event_count: int
    decayed: float  # decayed to the store clock at read time
    history: bytes  # serialized UserFeatures carrying only ``history`` (most recent first)


class ItemRow(NamedTuple):
    item_id: str
    event_count: int
    decayed: float


@dataclasses.dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What one ``apply`` changed (for cache invalidation and metrics)."""

    received: int
    applied: int
    users: frozenset[str]
    items: frozenset[str]
    clock_ms: int


def is_data_error(exc: BaseException) -> bool:
    """The store refused an event's data: retrying cannot help, dead-letter it."""
    return isinstance(exc, _DATA_ERRORS)


def is_outage(exc: BaseException) -> bool:
    """The store is down or too slow (not a verdict on the data)."""
    return isinstance(exc, _OUTAGE_ERRORS)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def create_engine(
    url: str, *, schema: str = "", pool_size: int = 8, autocommit: bool = False
) -> AsyncEngine:
    """An async engine with SQL spans; on PostgreSQL ``schema`` leads the search path.

    ``autocommit`` makes every connection autocommit from the start (the store's reader):
    cheaper than switching a pooled connection per checkout, and nothing to roll back on
    return."""
    _instrument_sql()
    # Looked up at call time: the instrumentor wraps ``create_async_engine`` in its module.
    create_async_engine = sa_asyncio.create_async_engine
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 3}
    if schema:
        connect_args["options"] = f"-c search_path={schema}"
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=3,
        connect_args=connect_args,
        **options,
    )


def _instrument_sql() -> None:
    """Trace every engine created from now on (the instrumentor may be installed only once)."""
    instrumentor = SQLAlchemyInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # The 0.66b1 instrumentor declares SQLAlchemy < 2.1; the event API it uses is unchanged.
        instrumentor.instrument(enable_commenter=False, skip_dep_check=True)


def _sqlite_begin(connection: Any) -> None:
    """Emit BEGIN ourselves: the sqlite3 driver would not open a transaction before DDL, so a
    migration interrupted half-way would leave tables without their Alembic version stamp."""
    if connection.get_isolation_level() != "AUTOCOMMIT":
        connection.exec_driver_sql("BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets API reads run while the ingester writes; NORMAL sync is durable at checkpoints
    # and crash-consistent (a SIGKILLed process loses no committed transaction).
    dbapi_connection.isolation_level = None  # no driver-side implicit BEGIN; see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


async def ensure_schema(engine: AsyncEngine, schema: str) -> None:
    """Create the PostgreSQL schema the search path names (migrations create the tables)."""
    if schema and engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


class FeatureStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        history_length: int,
        half_life_ms: float,
        reader: AsyncEngine | None = None,
        breaker: CircuitBreaker | None = None,
        wall_clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        """``engine`` writes; reads go to ``reader`` (an autocommit engine, its own pool so
        API reads and ingest transactions never wait for each other's connections), or
        without one to ``engine`` switched to autocommit per checkout."""
        self.engine = engine
        self.history_length = history_length
        self.half_life_ms = half_life_ms
        self.clock_ms = 0  # latest event time applied: "now" for decayed reads
        self.breaker = breaker or CircuitBreaker()
        self.read_timeout_s = READ_TIMEOUT_S
        self._wall_clock_ms = wall_clock_ms
        # Reads are single statements: autocommit spares the BEGIN and ROLLBACK round trips.
        self._reader = reader or engine.execution_options(isolation_level="AUTOCOMMIT")
        self._own_reader = reader
        self._dialect = engine.dialect.name

    def _bulk_insert(self, table: Table, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
        """An ``INSERT`` of ``rows`` for this dialect, and the parameters to execute it with.

        PostgreSQL gets the whole batch as one JSON parameter expanded by
        ``json_populate_recordset`` into the table's row type: the statement text is the same
        for every batch size (prepared once), and encoding is one C ``json.dumps`` instead of
        per-value adaptation. SQLite gets the rows as executemany parameters.
        """
        if self._dialect != "postgresql":
            return sqlite.insert(table), rows
        columns = list(rows[0])
        payload = json.dumps([{c: _json_value(row[c]) for c in columns} for row in rows])
        source = text(
            f"SELECT {', '.join(columns)} FROM json_populate_recordset("
            f"NULL::{table.name}, CAST(:bulk_rows AS json))"
        ).bindparams(bulk_rows=payload)
        columns_clause = source.columns(*(table.c[c] for c in columns))
        return postgresql.insert(table).from_select(columns, columns_clause), None

    async def _read(self, read: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``read(*args)`` through the circuit breaker (fails fast while the store is down),
        given up after ``read_timeout_s``.

        Given up, not cancelled-and-awaited: psycopg answers the cancellation of a running
        query by cancelling it on the server, waiting up to 5 s for that and 5 s more for the
        query to end, so awaiting a cancelled read against a hung database takes 10 s (the
        field report's 10 s ``/readyz``). The read runs in its own task; on timeout, or when the
        caller gives up, the task is cancelled and left to finish in the background."""
        trial = self.breaker.acquire()
        task = asyncio.ensure_future(read(*args))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.read_timeout_s)
        except asyncio.CancelledError:
            _abandon(task)
            self.breaker.release(trial)
            raise
        if not done:
            _abandon(task)
            self.breaker.failure(trial)
            raise TimeoutError(f"feature store read took over {self.read_timeout_s} s")
        try:
            result = task.result()
        except Exception as exc:
            if is_outage(exc):
                self.breaker.failure(trial)
            else:
                self.breaker.release(trial)
            raise
        self.breaker.success()
        return result

    async def load_clock(self) -> int:
        """Catch up with the stream clock in the store (events other replicas applied); never
        past this machine's clock, whatever an earlier version let into the rows."""
        latest = await self._read(self._latest_update)
        self.clock_ms = max(self.clock_ms, min(int(latest or 0), self._wall_clock_ms()))
        return self.clock_ms

    async def _latest_update(self) -> Any:
        async with self._reader.connect() as connection:
            return (await connection.execute(select(func.max(items.c.updated_ms)))).scalar()

    async def ping(self) -> None:
        await self._read(self._ping)

    async def _ping(self) -> None:
        async with self._reader.connect() as connection:
            await connection.execute(select(literal(1)))

    # -- writes ---------------------------------------------------------------------------

    async def apply(
        self, events: Sequence[InteractionEvent], *, not_after_ms: int | None = None
    ) -> AppliedBatch:
        """Apply the events not applied before, atomically; returns what changed.

        No event is taken as later than ``not_after_ms`` (the batch's Kafka record time) or
        this machine's clock: a future-dated event counts as happening when it was recorded.
        """
        bound = self._wall_clock_ms()
        if not_after_ms is not None:
            bound = min(bound, not_after_ms)
        unique = [_not_after(e, bound) for e in _dedupe(events)]
        stream_ms = max([self.clock_ms, *(e.timestamp_ms for e in unique)])
        async with self.engine.begin() as connection:
            fresh_ids = await self._claim(connection, [e.event_id for e in unique], stream_ms)
            fresh = [e for e in unique if e.event_id in fresh_ids]
            if fresh:
                await self._apply_items(connection, fresh)
                await self._apply_users(connection, fresh)
        self.breaker.success()  # the database answered: reads may go through again
        if fresh:
            self.clock_ms = max(self.clock_ms, max(e.timestamp_ms for e in fresh))
        return AppliedBatch(
            received=len(events),
            applied=len(fresh),
            users=frozenset(e.user_id for e in fresh),
            items=frozenset(e.item_id for e in fresh),
            clock_ms=self.clock_ms,
        )

    async def _claim(
        self, connection: AsyncConnection, event_ids: list[str], stream_ms: int
    ) -> set[str]:
        """Record ``event_ids``; return those that were not recorded before."""
        now_ms = int(time.time() * 1000)
        rows = [{"event_id": i, "ingested_ms": now_ms, "stream_ms": stream_ms} for i in event_ids]
        insert, params = self._bulk_insert(processed_events, rows)
        statement = insert.on_conflict_do_nothing(index_elements=["event_id"]).returning(
            processed_events.c.event_id
        )
        result = await connection.execute(statement, params)
        return set(result.scalars())

    async def prune_processed(self, window_ms: float, *, limit: int = 10_000) -> int:
        """Forget up to ``limit`` event ids claimed more than ``window_ms`` of stream time
        before the clock; returns how many. Replicas pruning at once skip each other's rows."""
        cutoff = self.clock_ms - int(window_ms)
        if cutoff <= 0:
            return 0
        expired = (
            select(processed_events.c.event_id)
            .where(processed_events.c.stream_ms < cutoff)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer anyway
        )
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(processed_events).where(processed_events.c.event_id.in_(expired))
            )
        return int(result.rowcount)

    async def _apply_items(
        self, connection: AsyncConnection, events: list[InteractionEvent]
    ) -> None:
        times: dict[str, list[int]] = defaultdict(list)
        for e in events:
            times[e.item_id].append(e.timestamp_ms)
        rows = []
        for item_id in sorted(times):  # one lock order for every writer: no deadlocks
            value, at_ms = fold(times[item_id], self.half_life_ms)
            rows.append(
                {
                    "item_id": item_id,
                    "event_count": len(times[item_id]),
                    "decayed": value,
                    "updated_ms": at_ms,
                }
            )
        statement, params = self._merge_counters(items, rows)
        await connection.execute(statement, params)

    def _merge_counters(self, table: Table, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
        """Upsert that adds decayed counters in SQL, referenced to the later timestamp."""
        statement, params = self._bulk_insert(table, rows)
        new, old = statement.excluded, table.c
        newer = new.updated_ms >= old.updated_ms
        old_decayed = old.decayed * self._decay_factor(new.updated_ms - old.updated_ms)
        new_decayed = new.decayed * self._decay_factor(old.updated_ms - new.updated_ms)
        upsert = statement.on_conflict_do_update(
            index_elements=[table.primary_key.columns.values()[0].name],
            set_={
                "event_count": old.event_count + new.event_count,
                "decayed": case(
                    (newer, old_decayed + new.decayed), else_=old.decayed + new_decayed
                ),
                "updated_ms": case((newer, new.updated_ms), else_=old.updated_ms),
            },
        )
        return upsert, params

    async def _apply_users(
        self, connection: AsyncConnection, events: list[InteractionEvent]
    ) -> None:
        by_user: dict[str, list[InteractionEvent]] = defaultdict(list)
        for e in events:
            by_user[e.user_id].append(e)
        user_ids = sorted(by_user)
        current: dict[str, Any] = {}
        for chunk in _chunks(user_ids):
            query = select(users).where(self._one_of(users.c.user_id, chunk)).with_for_update()
            current.update({r.user_id: r for r in await connection.execute(query)})
        rows = [self._merged_user(uid, by_user[uid], current.get(uid)) for uid in user_ids]
        statement, params = self._bulk_insert(users, rows)
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["user_id"],
                set_={c: statement.excluded[c] for c in rows[0] if c != "user_id"},
            ),
            params,
        )

    def _merged_user(
        self, user_id: str, events: list[InteractionEvent], existing: Any
    ) -> dict[str, Any]:
        value, at_ms = fold((e.timestamp_ms for e in events), self.half_life_ms)
        count = len(events)
        if existing is not None:
            value, at_ms = merge(
                existing.decayed, existing.updated_ms, value, at_ms, self.half_life_ms
            )
            count += existing.event_count
        return {
            "user_id": user_id,
            "event_count": count,
            "decayed": value,
            "updated_ms": at_ms,
            "history": self._merged_history(events, existing).SerializeToString(),
        }

    def _merged_history(
        self, events: list[InteractionEvent], existing: Any
    ) -> features_pb2.UserFeatures:
        """The last N entries, most recent first (ties: the later arrival first)."""
        fresh = sorted(reversed(events), key=lambda e: e.timestamp_ms, reverse=True)
        merged = features_pb2.UserFeatures(
            history=[
                features_pb2.HistoryEntry(
                    item_id=e.item_id, type=e.type, timestamp_ms=e.timestamp_ms
                )
                for e in fresh[: self.history_length]
            ]
        )
        if existing is None:
            return merged
        # The stored row's updated_ms is its newest event time. Events in order (the usual
        # case) go in front of the stored history, merged in C by protobuf.
        if fresh[-1].timestamp_ms >= existing.updated_ms:
            merged.MergeFromString(existing.history)
            del merged.history[self.history_length :]
            return merged
        return self._sorted_history(fresh, existing.history)

    def _sorted_history(
        self, fresh: list[InteractionEvent], stored: bytes
    ) -> features_pb2.UserFeatures:
        """Late events: a full merge by event time (stable, so ties keep arrival order)."""
        entries = [(e.timestamp_ms, e.item_id, e.type) for e in fresh]
        entries.extend(
            (h.timestamp_ms, h.item_id, h.type)
            for h in features_pb2.UserFeatures.FromString(stored).history
        )
        entries.sort(key=lambda entry: entry[0], reverse=True)
        return features_pb2.UserFeatures(
            history=[
                features_pb2.HistoryEntry(item_id=item_id, type=kind, timestamp_ms=ts)
                for ts, item_id, kind in entries[: self.history_length]
            ]
        )

    def _decay_factor(self, elapsed_ms: Any) -> Any:
        """``0.5 ** (elapsed / half-life)`` in SQL, the exponent capped (``MAX_HALF_LIVES``)."""
        exponent = elapsed_ms / literal(self.half_life_ms, Double)
        smaller = func.least if self._dialect == "postgresql" else func.min
        return func.power(0.5, smaller(exponent, literal(MAX_HALF_LIVES, Double)))

    # -- reads ----------------------------------------------------------------------------

    def _one_of(self, column: Any, ids: Sequence[str]) -> Any:
        """``column IN ids``; on PostgreSQL ``= ANY(array)``: one parameter, so the statement
        text is the same for every batch (prepared once) instead of growing with the batch."""
        if self._dialect == "postgresql":
            return column == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(String)))
        return column.in_(ids)

    async def users(self, user_ids: Iterable[str]) -> dict[str, UserRow]:
        """Rows of the known users among ``user_ids`` (unknown ones are simply absent)."""
        clock, half_life = self.clock_ms, self.half_life_ms
        keys = list(dict.fromkeys(user_ids))
        rows = await self._read(self._by_key, users, _USER_COLUMNS, keys)
        return {
            uid: UserRow(uid, count, decay(value, at_ms, clock, half_life), bytes(history))
            for uid, count, value, at_ms, history in rows
        }

    async def items(self, item_ids: Iterable[str]) -> dict[str, ItemRow]:
        clock, half_life = self.clock_ms, self.half_life_ms
        keys = list(dict.fromkeys(item_ids))
        rows = await self._read(self._by_key, items, _ITEM_COLUMNS, keys)
        return {
            iid: ItemRow(iid, count, decay(value, at_ms, clock, half_life))
            for iid, count, value, at_ms in rows
        }

    async def _by_key(
        self, table: Table, columns: tuple[str, ...], keys: list[str]
    ) -> list[tuple[Any, ...]]:
        """``columns`` of the rows whose primary key (the first column) is in ``keys``."""
        if not keys:
            return []
        if self._dialect == "postgresql":
            return await self._by_key_on_driver(table.name, columns, keys)
        found: list[tuple[Any, ...]] = []
        async with self._reader.connect() as connection:
            for chunk in _chunks(keys):
                query = select(*(table.c[c] for c in columns)).where(table.c[columns[0]].in_(chunk))
                found.extend(tuple(row) for row in await connection.execute(query))
        return found

    async def _by_key_on_driver(
        self, table: str, columns: tuple[str, ...], keys: list[str]
    ) -> list[tuple[Any, ...]]:
        """The PostgreSQL batch read straight on psycopg: one prepared statement, the keys as
        one binary ``text[]`` parameter, binary rows (bytea arrives as bytes, no hex)."""
        statement = f"SELECT {', '.join(columns)} FROM {table} WHERE {columns[0]} = ANY(%b)"
        with _tracer.start_as_current_span(
            f"SELECT {table}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement},
        ):
            async with self._reader.connect() as connection:
                driver: Any = (await connection.get_raw_connection()).driver_connection
                try:
                    cursor = driver.cursor(binary=True)
                    await cursor.execute(statement, (keys,), prepare=True)
                    return await cursor.fetchall()  # type: ignore[no-any-return]
                except psycopg.OperationalError:
                    await connection.invalidate()  # broken: keep it out of the pool
                    raise

    async def popular(self, k: int) -> list[ItemRow]:
        """The ``k`` items with the highest popularity decayed to the store clock."""
        return await self._read(self._popular, k)

    async def _popular(self, k: int) -> list[ItemRow]:
        clock = literal(max(self.clock_ms, 0), BigInteger)
        # Items updated after the clock (another replica ingested them) count undecayed.
        age = case((items.c.updated_ms < clock, clock - items.c.updated_ms), else_=0)
        score = items.c.decayed * self._decay_factor(age)
        query = (
            select(items.c.item_id, items.c.event_count, score.label("score"))
            .order_by(score.desc(), items.c.item_id)
            .limit(k)
        )
        async with self._reader.connect() as connection:
            return [ItemRow(i, c, s) for i, c, s in await connection.execute(query)]

    async def counts(self) -> dict[str, int]:
        """Totals, for tests and tools: processed events, user and item event counts."""
        async with self.engine.connect() as connection:
            processed = (
                await connection.execute(select(func.count()).select_from(processed_events))
            ).scalar()
            user_events = (await connection.execute(select(func.sum(users.c.event_count)))).scalar()
            item_events = (await connection.execute(select(func.sum(items.c.event_count)))).scalar()
        return {
            "processed": int(processed or 0),
            "user_events": int(user_events or 0),
            "item_events": int(item_events or 0),
        }

    async def close(self) -> None:
        if self._own_reader is not None:
            await self._own_reader.dispose()
        await self.engine.dispose()


def _json_value(value: Any) -> Any:
    """bytea travels in PostgreSQL's hex text form inside the JSON batch."""
    return "\\x" + value.hex() if isinstance(value, bytes) else value


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` without waiting for it; its outcome is retrieved (and dropped) later."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


def _not_after(event: InteractionEvent, bound_ms: int) -> InteractionEvent:
    """``event``, or a copy dated ``bound_ms`` when it claims a later time."""
    if event.timestamp_ms <= bound_ms:
        return event
    bounded = InteractionEvent()
    bounded.CopyFrom(event)
    bounded.timestamp_ms = bound_ms
    return bounded


def _dedupe(events: Sequence[InteractionEvent]) -> list[InteractionEvent]:
    """First occurrence of each event id (a batch can carry the same event twice)."""
    seen: set[str] = set()
    unique = []
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            unique.append(e)
    return unique


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
