"""Wiring of the ranking service: one HTTP session, one scorer, background refreshers.

``create_ranking_app`` must run inside the event loop (aiohttp and Triton clients bind to it);
the app owns every resource and releases them on cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from prometheus_client import CollectorRegistry

from freshrank.core.http import create_app, freeze_startup_heap, serve
from freshrank.core.model_repo import ModelRepository
from freshrank.ranking.api import RankLimits, add_routes
from freshrank.ranking.candidates import Retrieval
from freshrank.ranking.fallback import PopularityFallback
from freshrank.ranking.features import FeatureLookup
from freshrank.ranking.metrics import RankingMetrics
from freshrank.ranking.model_state import ModelState, ModelWatcher
from freshrank.ranking.ranker import Ranker
from freshrank.ranking.scorer import Scorer, TorchScorer
from freshrank.ranking.settings import RankingSettings
from freshrank.ranking.triton import CircuitBreaker, TritonScorer

__all__ = ["create_ranking_app", "run_service"]

log = logging.getLogger(__name__)
_STARTUP_PROBE_S = 2.0


def build_scorer(settings: RankingSettings, repository: ModelRepository) -> Scorer:
    if settings.scorer == "torch":
        return TorchScorer(repository, device=settings.device)
    return TritonScorer(
        settings.triton_url,
        settings.triton_model,
        protocol=settings.triton_protocol,
        deadline_s=settings.triton_deadline_ms / 1000,
        retries=settings.retries,
        breaker=CircuitBreaker(
            settings.breaker_failures,
            settings.breaker_open_s,
            min_failing_s=settings.breaker_failing_s,
        ),
        live=settings.triton_live,
    )


async def create_ranking_app(
    settings: RankingSettings, *, registry: CollectorRegistry | None = None
) -> web.Application:
    """The ranking API with its dependencies; start background work with the app's startup."""
    registry = registry or CollectorRegistry()
    metrics = RankingMetrics(registry)
    repository = ModelRepository(Path(settings.model_repository), settings.triton_model)
    scorer = build_scorer(settings, repository)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=5),
        trace_configs=[create_trace_config()],  # client spans + traceparent on every call
    )
    features = FeatureLookup(
        session,
        settings.feature_url,
        deadline_s=settings.feature_deadline_ms / 1000,
        retries=settings.retries,
        metrics=metrics,
    )
    watcher = ModelWatcher(
        repository,
        scorer.is_ready,
        poll_s=settings.model_poll_s,
    )
    fallback = PopularityFallback()
    ranker = Ranker(
        watcher=watcher,
        scorer=scorer,
        features=features,
        fallback=fallback,
        retrieval=Retrieval(fallback, settings.retrieval_size),
        metrics=metrics,
    )

    def on_refresh(state: ModelState | None) -> None:
        metrics.model_version.set(state.version if state else 0)

    async def refresh_popular_forever() -> None:
        while True:
            await _refresh_popular(features, fallback, settings.retrieval_size)
            await asyncio.sleep(settings.popular_refresh_s)

    async def readiness() -> tuple[bool, dict[str, Any]]:
        # Always ready: without a model the service still answers (flagged fallback).
        serving = watcher.serving
        return True, {
            "model_version": serving.version if serving else 0,
            "scorer": scorer.name,
            "popular_items": len(fallback.popular_ids),
        }

    tasks: list[asyncio.Task[None]] = []

    async def on_startup(_: web.Application) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STARTUP_PROBE_S):
                await asyncio.gather(
                    watcher.refresh(),
                    _refresh_popular(features, fallback, settings.retrieval_size),
                )
        on_refresh(watcher.serving)
        tasks.append(_spawn(watcher.run(on_refresh)))
        tasks.append(_spawn(refresh_popular_forever()))

    async def on_cleanup(_: web.Application) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await scorer.close()
        await session.close()

    app = create_app("ranking", registry=registry, readiness=[readiness])
    add_routes(
        app,
        ranker,
        RankLimits(
            default_k=settings.default_k,
            max_k=settings.max_k,
            max_candidates=settings.max_candidates,
        ),
    )
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _refresh_popular(
    features: FeatureLookup, fallback: PopularityFallback, size: int
) -> None:
    items = await features.popular(size)
    if items:
        fallback.update(items)


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


async def run_service(settings: RankingSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    app = await create_ranking_app(settings)
    runner = await serve(app, settings.host, settings.port)
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
