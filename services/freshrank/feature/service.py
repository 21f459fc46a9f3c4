"""Wiring: store (migrated at startup) + SQL tracing + cache + API + ingest loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from freshrank.core.http import serve
from freshrank.feature.api import STORE_ERRORS, FeatureApi, create_feature_app
from freshrank.feature.cache import TTLCache
from freshrank.feature.ingest import Ingester
from freshrank.feature.migrate import upgrade
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import FeatureStore, create_engine, ensure_schema

__all__ = ["FeatureService", "open_store", "run_service"]

log = logging.getLogger(__name__)
QUERY_TIMEOUT_S = 2.0
CLOCK_REFRESH_S = 1.0


async def open_store(settings: FeatureSettings, *, migrate: bool = True) -> FeatureStore:
    """An engine with SQL spans, the schema migrated to head, and the stream clock loaded."""
    engine = create_engine(
        settings.database_url, schema=settings.db_schema, pool_size=settings.pool_size
    )
    store = FeatureStore(
        engine, history_length=settings.history_length, half_life_ms=settings.half_life_ms
    )
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
        cache: TTLCache[tuple[str, str], tuple[int, bytes]] = TTLCache(s.cache_size, s.cache_ttl_s)
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
        if self.store is not None:
            await self.store.close()


async def run_service(settings: FeatureSettings) -> None:
    service = FeatureService(settings)
    await service.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service._stop.set)
    try:
        await service.wait()
    finally:
        await service.stop()
