"""Feature benchmark: the feature API vs a bare SQL read, and our ingest vs a bare ``COPY``.

Read side: the service runs in this process (PostgreSQL store, in-process cache as
configured, no Kafka); a separate load-generator process (multiprocessing, aiohttp client,
protobuf bodies) sends batch reads of ``--batch`` random users, first open-loop at ``--rate``
req/s (latency measured from each request's scheduled start, so queueing counts), then
closed-loop with ``--concurrency`` in flight (throughput). The peer is the same load generator
issuing the equivalent bare SQL read (psycopg 3 async, ``WHERE user_id = ANY(%s)`` on the same
table) with the same schedule. The API is measured with the cache on (as deployed) and off.

Write side: events/s of ``FeatureStore.apply`` (the ingester's transaction: dedupe by event id,
decayed counters, bounded history) vs a bare ``COPY`` of the same rows into a plain table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing
import queue as queue_module
import random
import statistics
import time
import uuid
from typing import Any

from freshrank.bench.report import BenchTable, percentile

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PROTOBUF = "application/x-protobuf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL to benchmark against")
    parser.add_argument("--users", type=int, default=2000, help="users in the seeded store")
    parser.add_argument("--items", type=int, default=1000, help="items in the seeded store")
    parser.add_argument("--events", type=int, default=50_000, help="events ingested (and seeded)")
    parser.add_argument("--batch", type=int, default=100, help="users per batch read")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop request rate, req/s")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop requests in flight")
    parser.add_argument("--cache-ttl-s", type=float, default=5.0, help="API cache TTL")
    parser.add_argument("--keep-schema", action="store_true", help="do not drop the bench schema")


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    """What the load-generator process does (picklable: it crosses the process boundary)."""

    kind: str  # "api" | "sql"
    target: str  # base URL or DSN
    schema: str
    user_ids: list[str]
    batch: int
    rate: float  # > 0: open loop at this rate; 0: closed loop
    concurrency: int
    duration: float
    seed: int = 1


def run(args: argparse.Namespace) -> int:
    # Overload in the open-loop phase is expected and measured; one warning per 503 is noise.
    logging.getLogger("freshrank.feature").setLevel(logging.ERROR)
    return asyncio.run(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    import psycopg

    from freshrank.sim import SyntheticConfig, SyntheticStream

    schema = f"bench_feature_{uuid.uuid4().hex[:8]}"
    sim = SyntheticStream(
        SyntheticConfig(users=args.users, items=args.items, events=args.events, drift_at=None)
    )
    events = list(sim.events())
    results: dict[str, Any] = {"schema": schema}
    try:
        results["ingest"] = await _ingest(args.dsn, schema, events)
        user_ids = sorted({e.user_id for e in events})
        results["reads"] = await _reads(args, schema, user_ids)
    finally:
        if not args.keep_schema:
            with psycopg.connect(args.dsn, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _report(args, results)
    return 0


# -- ingest -----------------------------------------------------------------------------------


async def _ingest(dsn: str, schema: str, events: list[Any]) -> dict[str, float]:
    from freshrank.feature.service import open_store
    from freshrank.feature.settings import FeatureSettings

    settings = FeatureSettings(database_url=_sqlalchemy_url(dsn), db_schema=schema)
    store = await open_store(settings)
    try:
        start = time.perf_counter()
        for offset in range(0, len(events), settings.ingest_batch):
            await store.apply(events[offset : offset + settings.ingest_batch])
        ours = time.perf_counter() - start
    finally:
        await store.close()
    bare = await asyncio.get_running_loop().run_in_executor(None, _copy_rows, dsn, schema, events)
    return {"ours_s": ours, "copy_s": bare, "events": float(len(events))}


def _copy_rows(dsn: str, schema: str, events: list[Any]) -> float:
    """The same rows through a bare ``COPY`` into a plain table (no dedupe, no aggregation)."""
    import psycopg

    with psycopg.connect(dsn, options=f"-c search_path={schema}") as connection:
        connection.execute(
            "CREATE TABLE bench_copy (event_id text, user_id text, item_id text,"
            " type smallint, timestamp_ms bigint)"
        )
        connection.commit()
        start = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy("COPY bench_copy FROM STDIN") as copy:
            for e in events:
                copy.write_row((e.event_id, e.user_id, e.item_id, e.type, e.timestamp_ms))
        connection.commit()
        return time.perf_counter() - start


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


# -- reads ------------------------------------------------------------------------------------


async def _reads(args: argparse.Namespace, schema: str, user_ids: list[str]) -> dict[str, Any]:
    from freshrank.embedded import free_port
    from freshrank.feature.service import FeatureService
    from freshrank.feature.settings import FeatureSettings

    out: dict[str, Any] = {}
    for label, cache_size in (("api", 100_000), ("api_nocache", 0)):
        port = free_port()
        settings = FeatureSettings(
            database_url=_sqlalchemy_url(args.dsn),
            db_schema=schema,
            port=port,
            ingest=False,
            cache_size=cache_size,
            cache_ttl_s=args.cache_ttl_s,
        )
        service = FeatureService(settings)
        await service.start()
        try:
            url = f"http://127.0.0.1:{port}"
            out[label] = await _open_and_closed(args, "api", url, schema, user_ids)
        finally:
            await service.stop()
    out["sql"] = await _open_and_closed(args, "sql", args.dsn, schema, user_ids)
    return out


async def _open_and_closed(
    args: argparse.Namespace, kind: str, target: str, schema: str, user_ids: list[str]
) -> dict[str, Any]:
    base = LoadSpec(kind, target, schema, user_ids, args.batch, 0.0, args.concurrency, 2.0)
    await _in_other_process(base)  # warm-up: connections, caches, query plans
    open_loop = await _in_other_process(
        dataclasses.replace(base, rate=args.rate, duration=args.duration)
    )
    closed_loop = await _in_other_process(dataclasses.replace(base, duration=args.duration))
    return {"open": open_loop, "closed": closed_loop}


async def _in_other_process(spec: LoadSpec) -> dict[str, Any]:
    """Run ``spec`` in a fresh process; adds this (the server's) process CPU per request."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_process, args=(spec, queue), daemon=True)
    cpu_start = time.process_time()
    process.start()
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + spec.duration + 60
    while True:
        try:
            result: dict[str, Any] = await loop.run_in_executor(None, queue.get, True, 0.5)
            break
        except queue_module.Empty:
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"load generator died (exit code {process.exitcode})") from None
    cpu = time.process_time() - cpu_start
    await loop.run_in_executor(None, process.join, 10)
    result["server_cpu_ms_per_request"] = cpu * 1000 / max(result["requests"], 1)
    return result


def _load_process(spec: LoadSpec, queue: Any) -> None:
    queue.put(asyncio.run(_generate(spec)))


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    read, close = await (_api_reader(spec) if spec.kind == "api" else _sql_reader(spec))
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        ids = rng.sample(spec.user_ids, spec.batch)
        try:
            await read(ids)
            latencies.append(time.perf_counter() - scheduled)
        except Exception:
            errors += 1

    start = time.perf_counter()
    end = start + spec.duration
    if spec.rate > 0:
        tasks = []
        interval = 1.0 / spec.rate
        n = 0
        while (scheduled := start + n * interval) < end:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
            n += 1
        await asyncio.gather(*tasks)
    else:

        async def worker() -> None:
            while time.perf_counter() < end:
                await one(time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    elapsed = time.perf_counter() - start
    await close()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "median_ms": statistics.median(ms) if ms else float("nan"),
    }


async def _api_reader(spec: LoadSpec) -> tuple[Any, Any]:
    import aiohttp

    from freshrank.v1 import features_pb2

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    url = spec.target + "/v1/users:batch"
    headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}

    async def read(ids: list[str]) -> None:
        body = features_pb2.BatchUserFeaturesRequest(user_ids=ids).SerializeToString()
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        reply = features_pb2.BatchUserFeaturesResponse.FromString(payload)
        if len(reply.users) != len(ids):
            raise RuntimeError("short reply")

    return read, session.close


async def _sql_reader(spec: LoadSpec) -> tuple[Any, Any]:
    import psycopg

    # A fixed set of connections handed out through a queue: the bare equivalent of a pool.
    connections = [
        await psycopg.AsyncConnection.connect(
            spec.target, autocommit=True, options=f"-c search_path={spec.schema}"
        )
        for _ in range(8)
    ]
    idle: asyncio.Queue[Any] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    query = (
        "SELECT user_id, event_count, decayed, updated_ms, history"
        " FROM feature_users WHERE user_id = ANY(%s)"
    )

    async def read(ids: list[str]) -> None:
        connection = await idle.get()
        try:
            cursor = await connection.execute(query, (ids,))
            await cursor.fetchall()
        finally:
            idle.put_nowait(connection)

    async def close() -> None:
        for connection in connections:
            await connection.close()

    return read, close


# -- report -----------------------------------------------------------------------------------


def _report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    reads = results["reads"]
    table = BenchTable(
        f"feature: batch read of {args.batch} users (open loop {args.rate:.0f} req/s; "
        f"closed loop {args.concurrency} in flight); ingest into PostgreSQL",
        peer="bare SQL / COPY",
    )
    sql = reads["sql"]
    for label, name in (("api", "API (cache on)"), ("api_nocache", "API (cache off)")):
        api = reads[label]
        table.add(
            f"{name} p50",
            api["open"]["p50_ms"],
            sql["open"]["p50_ms"],
            "ms",
            higher_is_better=False,
        )
        table.add(
            f"{name} p99",
            api["open"]["p99_ms"],
            sql["open"]["p99_ms"],
            "ms",
            higher_is_better=False,
        )
        table.add(
            f"{name} throughput", api["closed"]["throughput"], sql["closed"]["throughput"], "req/s"
        )
        table.add(
            f"{name} failed (open loop)",
            api["open"]["errors"],
            sql["open"]["errors"],
            "requests",
            higher_is_better=False,
        )
        table.add(
            f"{name} server CPU / request",
            api["closed"]["server_cpu_ms_per_request"],
            None,
            "ms",
            higher_is_better=False,
        )
    ingest = results["ingest"]
    table.add(
        "ingest",
        ingest["events"] / ingest["ours_s"],
        ingest["events"] / ingest["copy_s"],
        "events/s",
    )
    table.print()
    table.write_json(
        "feature", {"args": {k: v for k, v in vars(args).items() if k != "handler"}, **results}
    )
