"""PostgreSQL stopped under load and started again, and a service started before its database:
reads fail fast (503 + Retry-After), readiness answers at once and says no, everything heals.

Each test runs its own PostgreSQL (stopping the session's shared server would break the tests
around it); ``stop()`` keeps the data, ``start()`` brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from feature_helpers import base_url, running_service, stream
from kafka_support import produce
from waiting import eventually

from freshrank.embedded import EmbeddedBroker, EmbeddedPostgres
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings

pytestmark = pytest.mark.integration
REQUEST_INTERVAL_S = 0.02  # 50 requests/s, above the 40/s of the field report


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path) as server:
        yield server


def _settings(broker: EmbeddedBroker, postgres: EmbeddedPostgres, name: str) -> FeatureSettings:
    return FeatureSettings(
        name=name,
        bootstrap_servers=broker.bootstrap,
        database_url=postgres.url(),
        cache_size=0,  # every read goes to the store: the outage is not hidden by the cache
        history_len=5,
    )


@dataclasses.dataclass
class Sample:
    started: float
    seconds: float
    status: int
    retry_after: str | None


class Load:
    """Open-loop requests at a fixed rate (a slow answer does not slow the arrivals)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.samples: list[Sample] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            task = asyncio.create_task(self.one(f"/v1/users/u{n % 7}"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
            await asyncio.sleep(REQUEST_INTERVAL_S)
        await asyncio.gather(*self._tasks)

    async def one(self, path: str) -> None:
        start = time.monotonic()
        try:
            async with self.http.get(self.base + path) as response:
                await response.read()
                status, retry = response.status, response.headers.get("Retry-After")
        except aiohttp.ClientError:
            status, retry = 0, None
        self.samples.append(Sample(start, time.monotonic() - start, status, retry))

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.started < end]


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


async def _probe(http: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    start = time.monotonic()
    async with http.get(url) as response:
        await response.read()
        return time.monotonic() - start, response.status


async def _until_ok(http: aiohttp.ClientSession, url: str, timeout: float = 30) -> float:
    """Seconds until ``url`` answers 200."""

    async def ok() -> bool:
        return (await _probe(http, url))[1] == 200

    return await eventually(ok, timeout=timeout, interval=0.05)


async def _readiness_until(
    http: aiohttp.ClientSession, base: str, deadline: float
) -> list[tuple[float, int]]:
    """/readyz probed every 0.1 s until ``deadline`` (monotonic): (seconds, status) each."""
    readiness = []
    while time.monotonic() < deadline:
        readiness.append(await _probe(http, base + "/readyz"))
        await asyncio.sleep(0.1)
    return readiness


@contextlib.asynccontextmanager
async def _serving(settings: FeatureSettings) -> AsyncIterator[tuple[FeatureService, str]]:
    """The started service and its base URL; stopped on the way out."""
    async with running_service(settings.bootstrap_servers, settings) as service:
        yield service, base_url(service)


@contextlib.asynccontextmanager
async def _under_load(http: aiohttp.ClientSession, base: str) -> AsyncIterator[Load]:
    """``Load`` running for the block; its requests all answered on the way out."""
    load, stop = Load(http, base), asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        yield load
    finally:
        stop.set()
        await task


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_database_outage_fails_fast_then_heals(
    broker: EmbeddedBroker,
    own_postgres: EmbeddedPostgres,
    unique_name: str,
    http: aiohttp.ClientSession,
) -> None:
    settings = _settings(broker, own_postgres, unique_name)
    async with _serving(settings) as (service, base):
        assert service.store is not None
        produce(broker.bootstrap, settings.events_topic, stream(50))
        store = service.store
        await eventually(lambda: _processed(store, 50))
        async with _under_load(http, base) as load:
            await asyncio.sleep(1.0)  # a healthy baseline

            await asyncio.to_thread(own_postgres.stop)
            down_at = time.monotonic()
            # Events keep arriving during the outage: ingest is stuck on them, nothing is lost.
            produce(broker.bootstrap, settings.events_topic, stream(10, prefix="late"))
            readiness = await _readiness_until(http, base, down_at + 5.0)
            ready_body = await (await http.get(base + "/readyz")).json()
            await asyncio.to_thread(own_postgres.start)
            up_at = time.monotonic()

            reads_back_s = await _until_ok(http, base + "/v1/users/u1")
            ready_back_s = await _until_ok(http, base + "/readyz")
            await eventually(lambda: _processed(store, 60), timeout=60)

    during = load.between(down_at, up_at)
    assert during, "no requests during the outage"
    p99_ms = _p99([s.seconds for s in during]) * 1000
    ready_ms = [seconds * 1000 for seconds, _ in readiness]
    statuses = sorted({s.status for s in during})
    print(
        f"\noutage: {len(during)} requests, statuses {statuses}, p99 {p99_ms:.1f} ms, max"
        f" {max(s.seconds for s in during) * 1000:.1f} ms; /readyz max {max(ready_ms):.1f} ms;"
        f" reads back {reads_back_s:.2f} s and ready {ready_back_s:.2f} s after the restart"
    )
    assert statuses == [503]
    assert all(s.retry_after is not None and int(s.retry_after) >= 1 for s in during)
    assert p99_ms < 100
    assert {status for _, status in readiness[5:]} == {503}  # false within half a second
    assert max(ready_ms) < 500
    assert ready_body["ready"] is False
    assert "stuck" in ready_body["ingest"]


async def _processed(store: object, count: int) -> bool:
    try:
        return (await store.counts())["processed"] >= count  # type: ignore[attr-defined, no-any-return]
    except Exception:  # the database is coming back
        return False


async def test_service_started_while_the_database_is_down_becomes_ready_once_it_is_up(
    broker: EmbeddedBroker,
    own_postgres: EmbeddedPostgres,
    unique_name: str,
    http: aiohttp.ClientSession,
) -> None:
    settings = _settings(broker, own_postgres, unique_name)
    await asyncio.to_thread(own_postgres.stop)
    started = time.monotonic()
    async with _serving(settings) as (service, base):  # serves at once instead of exiting
        assert time.monotonic() - started < 10
        assert (await _probe(http, base + "/healthz"))[1] == 200
        seconds, status = await _probe(http, base + "/readyz")
        assert status == 503
        assert seconds < 0.5
        body = await (await http.get(base + "/readyz")).json()
        assert body["ingest"] == "waiting for the database"
        response = await http.get(base + "/v1/users/u1")
        assert response.status == 503
        assert response.headers["Retry-After"]
        produce(broker.bootstrap, settings.events_topic, stream(20))

        await asyncio.to_thread(own_postgres.start)

        await _until_ok(http, base + "/readyz")
        assert service.store is not None
        store = service.store
        await eventually(lambda: _processed(store, 20), timeout=60)
        assert (await (await http.get(base + "/v1/users/u1")).json())["event_count"] != "0"


def _signal_server(server: EmbeddedPostgres, signum: int) -> None:
    """``signum`` to the postmaster and its children (each runs in its own process group)."""
    process = server.process._proc
    assert process is not None
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in [process.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


async def test_a_hung_database_costs_a_bounded_wait_not_ten_seconds(
    broker: EmbeddedBroker,
    own_postgres: EmbeddedPostgres,
    unique_name: str,
    http: aiohttp.ClientSession,
) -> None:
    # Frozen, not stopped: connections stay open and queries never answer. psycopg absorbs
    # the cancellation of such a query for up to 10 s; /readyz took 11 s before.
    settings = _settings(broker, own_postgres, unique_name)
    async with _serving(settings) as (_, base), _under_load(http, base) as load:
        await asyncio.sleep(0.5)
        _signal_server(own_postgres, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            readiness = await _readiness_until(http, base, frozen_at + 4.0)
        finally:
            _signal_server(own_postgres, signal.SIGCONT)
        thawed_at = time.monotonic()

        back_s = await _until_ok(http, base + "/v1/users/u1")
    during = load.between(frozen_at, thawed_at)
    slowest_ms = max(s.seconds for s in during) * 1000
    ready_ms = max(seconds for seconds, _ in readiness) * 1000
    p50_ms = statistics.median(s.seconds for s in during) * 1000
    p99_ms = _p99([s.seconds for s in during]) * 1000
    print(
        f"\nhung: {len(during)} requests, p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms,"
        f" max {slowest_ms:.1f} ms; /readyz max {ready_ms:.1f} ms;"
        f" reads back {back_s:.2f} s after the thaw"
    )
    assert {s.status for s in during} <= {200, 503}
    assert slowest_ms < 1500  # the read timeout (0.5 s) and the API's, never psycopg's 10 s
    assert ready_ms < 1500
    assert {status for _, status in readiness[-10:]} == {503}
