"""Wiring: store (migrated at startup) + SQL tracing + cache + API + ingest loop.

A database that is down at startup is waited for (with backoff) rather than fatal: the API
serves from the start (``/healthz`` 200, ``/readyz`` 503 naming the wait, reads 503), and the
store is migrated and ingest started as soon as the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from freshrank.core.http import REGISTRY_KEY, freeze_startup_heap, serve
from freshrank.feature.api import CacheEntry, CacheKey, FeatureApi, create_feature_app
from freshrank.feature.cache import TTLCache
from freshrank.feature.ingest import Ingester
from freshrank.feature.metrics import IngestMetrics
from freshrank.feature.migrate import upgrade
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import (
    STORE_ERRORS,
    FeatureStore,
    StoreUnavailable,
    create_engine,
    ensure_schema,
    is_outage,
)

__all__ = ["FeatureService", "build_store", "open_store", "run_service"]

log = logging.getLogger(__name__)
QUERY_TIMEOUT_S = 2.0
CLOCK_REFRESH_S = 1.0
WRITER_POOL_SIZE = 2  # the ingest transaction and the odd migration or prune
STARTUP_BACKOFF_S = (0.2, 5.0)  # first and longest wait between attempts to reach the database


async def open_store(settings: FeatureSettings, *, migrate: bool = True) -> FeatureStore:
    """An engine with SQL spans, the schema migrated to head, and the stream clock loaded."""
    store = build_store(settings)
    if migrate:
        await prepare_store(store, settings)
    return store


async def prepare_store(store: FeatureStore, settings: FeatureSettings) -> None:
    """Schema created and migrated to head, stream clock loaded (needs the database)."""
    await ensure_schema(store.engine, settings.db_schema)
    await upgrade(store.engine)
    await store.load_clock()


def build_store(settings: FeatureSettings) -> FeatureStore:
    """The store's engines (no connection is made yet)."""
    url, schema = settings.database_url.get_secret_value(), settings.db_schema
    reader = None
    if not url.startswith("sqlite"):  # a local SQLite file: reads share the writer's engine
        reader = create_engine(url, schema=schema, pool_size=settings.pool_size, autocommit=True)
    return FeatureStore(
        create_engine(url, schema=schema, pool_size=WRITER_POOL_SIZE),
        history_length=settings.history_len,
        half_life_ms=settings.half_life_ms,
        reader=reader,
    )


def _waitable(exc: BaseException) -> bool:
    """An error at startup worth waiting out (the database is not there yet)."""
    return is_outage(exc) or isinstance(exc, StoreUnavailable)


class FeatureService:
    """The running service; ``start``/``stop`` so tests can run it in-process."""

    def __init__(self, settings: FeatureSettings) -> None:
        self.settings = settings
        self.store: FeatureStore | None = None
        self.api: FeatureApi | None = None
        self.ingester: Ingester | None = None
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._main_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.store_open = False  # migrated and clock loaded

    async def start(self) -> None:
        """Serve; open the store now, or in the background while the database is down."""
        s = self.settings
        self.store = store = build_store(s)
        opened = await self._try_open()
        cache: TTLCache[CacheKey, CacheEntry] = TTLCache(s.cache_size, s.cache_ttl_s)
        self.api = api = FeatureApi(store, cache, query_timeout_s=QUERY_TIMEOUT_S)
        self.app = create_feature_app(api, readiness=[self._ready])
        if s.ingest:
            self.ingester = Ingester(s, store, on_applied=api.invalidate)
        self.app[REGISTRY_KEY].register(IngestMetrics(self.ingester, store.breaker))
        self._runner = await serve(self.app, s.host, s.port)
        self._main_task = asyncio.create_task(self._open_then_ingest(opened))

    async def _try_open(self) -> bool:
        """One attempt to migrate the store; False when the database is not reachable."""
        assert self.store is not None
        try:
            await prepare_store(self.store, self.settings)
        except STORE_ERRORS as exc:
            if not _waitable(exc):
                raise  # e.g. no permission: waiting will not help, let the pod fail
            log.warning("feature store not reachable at startup, waiting: %s", exc)
            return False
        self.store_open = True
        return True

    async def _open_then_ingest(self, opened: bool) -> None:
        backoff, longest = STARTUP_BACKOFF_S
        while not opened:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            if self._stop.is_set():
                return
            backoff = min(backoff * 2, longest)
            opened = await self._try_open()
        log.info("feature store open")
        self._clock_task = asyncio.create_task(self._follow_clock())
        if self.ingester is not None:
            await self.ingester.run(self._stop)

    async def _follow_clock(self) -> None:
        """Keep the read clock current with events other replicas ingested (cheap indexed max)."""
        assert self.store is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CLOCK_REFRESH_S)
            with contextlib.suppress(*STORE_ERRORS):
                await self.store.load_clock()

    async def _ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready once the store is open and while ingest is not stuck on a store outage (no
        I/O here: ``/readyz`` answers at once whatever the database does)."""
        if not self.store_open:
            return False, {"ingest": "waiting for the database"}
        if self.ingester is None:
            return True, {"ingest": "disabled"}
        if self._main_task is not None and self._main_task.done():
            return False, {"ingest": "stopped"}
        if self.ingester.stuck:
            return False, {"ingest": "stuck: feature store unavailable, retrying"}
        return True, {"ingest": "running"}

    async def wait(self) -> None:
        """Until stopped, or the ingest loop dies (the error propagates: let the pod restart)."""
        if self._main_task is not None:
            await self._main_task
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._main_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main_task
        if self._clock_task is not None:
            await self._clock_task
        if self._runner is not None:
            await self._runner.cleanup()
        if self.api is not None:
            await self.api.close()
        if self.store is not None:
            await self.store.close()


async def run_service(settings: FeatureSettings) -> None:
    service = FeatureService(settings)
    await service.start()
    freeze_startup_heap()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service._stop.set)
    try:
        await service.wait()
    finally:
        await service.stop()
