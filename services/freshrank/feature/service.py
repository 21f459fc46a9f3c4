"""Wiring: store (migrated at startup) + SQL tracing + cache + API + ingest loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

from aiohttp import web

from freshrank.core.http import serve
from freshrank.feature.api import CacheEntry, CacheKey, FeatureApi, create_feature_app
from freshrank.feature.cache import TTLCache
from freshrank.feature.ingest import Ingester
from freshrank.feature.migrate import upgrade
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import STORE_ERRORS, FeatureStore, create_engine, ensure_schema

__all__ = ["FeatureService", "freeze_startup_heap", "open_store", "run_service"]

log = logging.getLogger(__name__)
QUERY_TIMEOUT_S = 2.0
CLOCK_REFRESH_S = 1.0
WRITER_POOL_SIZE = 2  # the ingest transaction and the odd migration or prune


async def open_store(settings: FeatureSettings, *, migrate: bool = True) -> FeatureStore:
    """An engine with SQL spans, the schema migrated to head, and the stream clock loaded."""
    url, schema = settings.database_url, settings.db_schema
    reader = None
    if not url.startswith("sqlite"):  # a local SQLite file: reads share the writer's engine
        reader = create_engine(url, schema=schema, pool_size=settings.pool_size, autocommit=True)
    store = FeatureStore(
        create_engine(url, schema=schema, pool_size=WRITER_POOL_SIZE),
        history_length=settings.history_length,
        half_life_ms=settings.half_life_ms,
        reader=reader,
    )
    engine = store.engine
    if migrate:
        await ensure_schema(engine, settings.db_schema)
        await upgrade(engine)
        await store.load_clock()
    return store


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
        self._ingest_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.store = store = await open_store(s)
        cache: TTLCache[CacheKey, CacheEntry] = TTLCache(s.cache_size, s.cache_ttl_s)
        self.api = api = FeatureApi(store, cache, query_timeout_s=QUERY_TIMEOUT_S)
        self.app = create_feature_app(api, readiness=[self._ingest_ready])
        self._runner = await serve(self.app, s.host, s.port)
        if s.ingest:
            self.ingester = Ingester(s, store, on_applied=api.invalidate)
            self._ingest_task = asyncio.create_task(self.ingester.run(self._stop))
        self._clock_task = asyncio.create_task(self._follow_clock())

    async def _follow_clock(self) -> None:
        """Keep the read clock current with events other replicas ingested (cheap indexed max)."""
        assert self.store is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CLOCK_REFRESH_S)
            with contextlib.suppress(*STORE_ERRORS):
                await self.store.load_clock()

    async def _ingest_ready(self) -> tuple[bool, dict[str, Any]]:
        if self._ingest_task is None:
            return True, {"ingest": "disabled"}
        if self._ingest_task.done():
            return False, {"ingest": "stopped"}
        return True, {"ingest": "running"}

    async def wait(self) -> None:
        """Until stopped, or the ingest loop dies (the error propagates: let the pod restart)."""
        if self._ingest_task is not None:
            await self._ingest_task
        else:
            await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._ingest_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ingest_task
        if self._clock_task is not None:
            await self._clock_task
        if self._runner is not None:
            await self._runner.cleanup()
        if self.api is not None:
            await self.api.close()
        if self.store is not None:
            await self.store.close()


def freeze_startup_heap() -> None:
    """Exempt everything alive after startup from garbage collection.

    Modules, SQLAlchemy metadata, protobuf descriptors and the like live as long as the
    process, yet every full collection walks them: 120-140 ms pauses of the event loop (a
    whole batch of requests late) in ``freshrank bench feature`` before this. Frozen, a full
    collection only walks what was allocated since.
    """
    gc.collect()
    gc.freeze()


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
