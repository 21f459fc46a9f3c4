"""Feature benchmark: the feature API vs a bare SQL read, and our ingest vs a bare ``COPY``.

Read side: the service runs in this process (PostgreSQL store, in-process cache as
configured, no Kafka); a separate load-generator process (multiprocessing, aiohttp client,
protobuf bodies) sends batch reads of ``--batch`` random users, first open-loop at ``--rate``
req/s (latency measured from each request's scheduled start, so queueing counts), then
closed-loop with ``--concurrency`` in flight (throughput). The peer is the same load generator
issuing the equivalent bare SQL read (psycopg 3 async, ``WHERE user_id = ANY(%s)`` on the same
table) with the same schedule. The API is measured with the cache on (as deployed) and off.

So that a tail can be told apart from a stalled load generator, a paused server or a busy
machine, the JSON also has, per measurement: event-loop lag in both processes (a 5 ms ticker),
garbage-collector pauses in the server, how late the generator sent requests behind schedule,
and per 0.5 s window of the schedule the latency, both loops' worst lag and the CPU used by the
server, the generator and the whole machine (the rest is PostgreSQL and other tenants);
``--timeline`` prints those windows for the open loops.

Write side: events/s of ``FeatureStore.apply`` (the ingester's transaction: dedupe by event id,
decayed counters, bounded history) vs a bare ``COPY`` of the same rows into a plain table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import multiprocessing
import os
import queue as queue_module
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import SecretStr

from freshrank.bench.load import drive
from freshrank.bench.report import BenchTable, percentile
from freshrank.core.contracts import routes
from freshrank.core.protojson import PROTOBUF

LAG_TICK_S = 0.005
CPU_EVERY_TICKS = 20  # CPU counters sampled every 100 ms
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat unit
WINDOW_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL to benchmark against (default: start an embedded one for the run)",
    )
    parser.add_argument("--users", type=int, default=2000, help="users in the seeded store")
    parser.add_argument("--items", type=int, default=1000, help="items in the seeded store")
    parser.add_argument("--events", type=int, default=50_000, help="events ingested (and seeded)")
    parser.add_argument("--batch", type=int, default=100, help="users per batch read")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop request rate, req/s")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop requests in flight")
    parser.add_argument("--cache-ttl-s", type=float, default=5.0, help="API cache TTL")
    parser.add_argument("--keep-schema", action="store_true", help="do not drop the bench schema")
    parser.add_argument(
        "--timeline", action="store_true", help="print open-loop latency per 0.5 s window"
    )


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
    if args.dsn is not None:
        return asyncio.run(_bench(args))
    import tempfile
    from pathlib import Path

    from freshrank.embedded import EmbeddedPostgres

    with (
        tempfile.TemporaryDirectory(prefix="freshrank-bench-") as workdir,
        EmbeddedPostgres(Path(workdir)) as server,
    ):
        args.dsn = server.url(driver="postgresql")
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


def _sqlalchemy_url(dsn: str) -> SecretStr:
    return SecretStr(dsn.replace("postgresql://", "postgresql+psycopg://", 1))


# -- reads ------------------------------------------------------------------------------------


async def _reads(args: argparse.Namespace, schema: str, user_ids: list[str]) -> dict[str, Any]:
    from freshrank.core.http import freeze_startup_heap
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
        freeze_startup_heap()  # as ``freshrank feature`` does after startup
        try:
            url = f"http://127.0.0.1:{port}"
            out[label] = await _open_and_closed(args, "api", url, schema, user_ids)
        finally:
            await service.stop()
            gc.unfreeze()
    out["sql"] = await _open_and_closed(args, "sql", args.dsn, schema, user_ids)
    return out


async def _open_and_closed(
    args: argparse.Namespace, kind: str, target: str, schema: str, user_ids: list[str]
) -> dict[str, Any]:
    warm_up_s = min(2.0, args.duration)
    base = LoadSpec(kind, target, schema, user_ids, args.batch, 0.0, args.concurrency, warm_up_s)
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
    with _server_watch() as server:
        while True:
            try:
                result: dict[str, Any] = await loop.run_in_executor(None, queue.get, True, 0.5)
                break
            except queue_module.Empty:
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"load generator died (exit code {process.exitcode})"
                    ) from None
    window = result.pop("window")
    result["started_at"] = window[0]  # CLOCK_MONOTONIC: lines up with other tools' samples
    result["server"] = server.summary(window)
    _add_server_series(result["timeline"], result["server"], result["client"], window[0])
    cpu = time.process_time() - cpu_start
    await loop.run_in_executor(None, process.join, 10)
    result["server_cpu_ms_per_request"] = cpu * 1000 / max(result["requests"], 1)
    return result


class _Watch:
    """Event-loop lag (a ticker's lateness), garbage-collector pauses and this process's CPU
    time, with times; with ``machine``, also the whole machine's CPU counters (Linux), so a
    window's tail can be put on whoever else was running."""

    def __init__(self, *, machine: bool = False) -> None:
        self.lags: list[tuple[float, float]] = []  # (tick time, seconds late)
        self.gc_pauses: list[tuple[float, float]] = []  # (start, seconds)
        self.own_cpu: list[tuple[float, float]] = []  # (time, process CPU seconds)
        self.machine_cpu: list[tuple[float, float, float]] = []  # (time, busy s, all s)
        self._machine = machine
        self._gc_start = 0.0

    async def tick(self) -> None:
        ticks = 0
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.lags.append((start, time.perf_counter() - start - LAG_TICK_S))
            ticks += 1
            if ticks % CPU_EVERY_TICKS == 0:
                self._sample_cpu()

    def _sample_cpu(self) -> None:
        now = time.perf_counter()
        self.own_cpu.append((now, time.process_time()))
        if not self._machine:
            return
        try:
            with open("/proc/stat") as stat:
                jiffies = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            self._machine = False  # not Linux: the timeline goes without it
            return
        idle = jiffies[3] + jiffies[4]  # idle + iowait
        self.machine_cpu.append(
            (now, (sum(jiffies) - idle) / CLOCK_TICKS, sum(jiffies) / CLOCK_TICKS)
        )

    def on_gc(self, phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append((self._gc_start, time.perf_counter() - self._gc_start))

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        """Lag and GC stats, restricted to ``window`` (the measured span) when given."""
        lo, hi = window or (float("-inf"), float("inf"))
        lags = [lag * 1000 for at, lag in self.lags if lo <= at <= hi]
        pauses = [pause * 1000 for at, pause in self.gc_pauses if lo <= at <= hi]
        return {
            "loop_lag_p99_ms": percentile(lags, 99),
            "loop_lag_max_ms": max(lags, default=0.0),
            "gc_collections": len(pauses),
            "gc_pause_max_ms": max(pauses, default=0.0),
            "lag_series": [(at, lag) for at, lag in self.lags if lo <= at <= hi],
            "own_cpu_series": [x for x in self.own_cpu if lo <= x[0] <= hi],
            "machine_cpu_series": [x for x in self.machine_cpu if lo <= x[0] <= hi],
        }


@contextlib.contextmanager
def _server_watch() -> Iterator[_Watch]:
    watch = _Watch(machine=True)
    ticker = asyncio.get_running_loop().create_task(watch.tick())
    gc.callbacks.append(watch.on_gc)
    try:
        yield watch
    finally:
        gc.callbacks.remove(watch.on_gc)
        ticker.cancel()


def _load_process(spec: LoadSpec, queue: Any) -> None:
    queue.put(asyncio.run(_generate(spec)))


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    read, close = await (_api_reader(spec) if spec.kind == "api" else _sql_reader(spec))
    # The generator must not stall the measurement either: no full collections walking the
    # imported libraries (the service gets the same treatment).
    gc.collect()
    gc.freeze()
    latencies: list[float] = []
    sent_late: list[float] = []  # how far behind schedule each request left this process
    timeline: list[tuple[float, float]] = []  # (scheduled, latency)
    errors = 0
    watch = _Watch()
    ticker = asyncio.create_task(watch.tick())

    async def one(scheduled: float) -> None:
        nonlocal errors
        sent_late.append(time.perf_counter() - scheduled)
        ids = rng.sample(spec.user_ids, spec.batch)
        try:
            await read(ids)
            latencies.append(time.perf_counter() - scheduled)
            timeline.append((scheduled, latencies[-1]))
        except Exception:
            errors += 1

    start = await drive(one, duration=spec.duration, rate=spec.rate, concurrency=spec.concurrency)
    elapsed = time.perf_counter() - start
    ticker.cancel()
    await close()
    ms = [x * 1000 for x in latencies]
    client = watch.summary()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "median_ms": statistics.median(ms) if ms else float("nan"),
        "client": {
            "sent_late_p99_ms": percentile([x * 1000 for x in sent_late], 99),
            "sent_late_max_ms": max(sent_late, default=0.0) * 1000,
            "own_cpu_series": client["own_cpu_series"],
            **{k: v for k, v in client.items() if not k.endswith("_series")},
        },
        "window": (start, start + elapsed),
        "timeline": _windows(timeline, start, client["lag_series"]),
    }


def _add_server_series(
    windows: list[dict[str, float]], server: dict[str, Any], client: dict[str, Any], start: float
) -> None:
    """Per window: the server's worst loop lag, and CPU use in % of one core by the server,
    the load generator and the whole machine (the rest is PostgreSQL and everyone else)."""
    worst: dict[int, float] = {}
    for at, lag in server.pop("lag_series"):
        index = _window_of(at, start)
        worst[index] = max(worst.get(index, 0.0), lag * 1000)
    server_cpu = _cpu_per_window(server.pop("own_cpu_series"), start)
    client_cpu = _cpu_per_window(client.pop("own_cpu_series"), start)
    machine = server.pop("machine_cpu_series")
    machine_busy = _cpu_per_window([(at, busy) for at, busy, _ in machine], start)
    machine_all = _cpu_per_window([(at, every) for at, _, every in machine], start)
    cores = os.cpu_count() or 1
    for window in windows:
        index = int(window["t_s"] / WINDOW_S)
        window["server_lag_max_ms"] = worst.get(index, 0.0)
        for key, series in (("server_cpu_pct", server_cpu), ("client_cpu_pct", client_cpu)):
            if index in series:
                window[key] = series[index]
        if machine_all.get(index):
            window["machine_cpu_pct"] = machine_busy[index] / machine_all[index] * cores * 100


def _window_of(at: float, start: float) -> int:
    return math.floor((at - start) / WINDOW_S)  # before the start: a negative window


def _cpu_per_window(samples: list[tuple[float, float]], start: float) -> dict[int, float]:
    """Seconds counted per second of time, in %, per window (from cumulative samples)."""
    grouped: dict[int, list[tuple[float, float]]] = {}
    for at, seconds in samples:
        grouped.setdefault(_window_of(at, start), []).append((at, seconds))
    return {
        index: (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
        for index, inside in grouped.items()
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]
    }


def _windows(
    timeline: list[tuple[float, float]], start: float, client_lags: list[tuple[float, float]]
) -> list[dict[str, float]]:
    """Latency per ``WINDOW_S`` of schedule, with the load generator's worst loop lag."""
    buckets: dict[int, list[float]] = {}
    for scheduled, latency in timeline:
        buckets.setdefault(_window_of(scheduled, start), []).append(latency * 1000)
    lags: dict[int, float] = {}
    for at, lag in client_lags:
        index = _window_of(at, start)
        lags[index] = max(lags.get(index, 0.0), lag * 1000)
    return [
        {
            "t_s": index * WINDOW_S,
            "requests": len(values),
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
            "client_lag_max_ms": lags.get(index, 0.0),
        }
        for index, values in sorted(buckets.items())
    ]


async def _api_reader(spec: LoadSpec) -> tuple[Any, Any]:
    import aiohttp

    from freshrank.v1 import features_pb2

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    url = spec.target + routes.FEATURE_USERS_BATCH
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
        for quantile in ("p50", "p99"):
            key = f"{quantile}_ms"
            table.add(
                f"{name} {quantile}",
                api["open"][key],
                sql["open"][key],
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
    if args.timeline:
        for label in ("api", "api_nocache", "sql"):
            _print_timeline(label, reads[label]["open"])
    table.write_json(
        "feature", {"args": {k: v for k, v in vars(args).items() if k != "handler"}, **results}
    )


def _print_timeline(label: str, run: dict[str, Any]) -> None:
    """The open loop window by window: where a tail came from, and who was stalled then."""
    from rich.console import Console
    from rich.table import Table

    server, client = run["server"], run["client"]
    table = Table(
        title=f"{label}, open loop: latency per {WINDOW_S} s of schedule (server GC: "
        f"{server['gc_collections']} collections, longest {server['gc_pause_max_ms']:.1f} ms; "
        f"requests sent late p99 {client['sent_late_p99_ms']:.1f} ms)"
    )
    columns = ("t (s)", "requests", "p50 ms", "p99 ms", "max ms", "server lag", "client lag")
    for column in (*columns, "CPU % server", "client", "machine"):
        table.add_column(column, justify="right")
    for w in run["timeline"]:
        table.add_row(
            f"{w['t_s']:.1f}",
            str(w["requests"]),
            f"{w['p50_ms']:.1f}",
            f"{w['p99_ms']:.1f}",
            f"{w['max_ms']:.1f}",
            f"{w.get('server_lag_max_ms', 0.0):.1f}",
            f"{w['client_lag_max_ms']:.1f}",
            *(f"{w[k]:.0f}" if k in w else "-" for k in ("server_cpu_pct", "client_cpu_pct")),
            f"{w['machine_cpu_pct']:.0f}" if "machine_cpu_pct" in w else "-",
        )
    Console().print(table)
