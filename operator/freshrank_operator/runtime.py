"""Running the operator: Kopf settings, the health/metrics server, and ``kopf.operator``."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf
from aiohttp import web

from freshrank.core.http import create_app, serve
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import Runtime, register

__all__ = ["make_settings", "run_operator"]

PREFIX = "freshrank.io"


def make_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # State in our own annotations: the CRD's status schema stays ours (no status.kopf).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events: our decisions and problems, not chatter
    settings.posting.reporting_component = "freshrank-operator"
    settings.peering.standalone = config.standalone
    settings.peering.name = config.peering_name
    settings.scanning.disabled = not config.scanning
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = (0.5, 1, 2, 5)
    # Timers exit at once on shutdown/deletion instead of being polled for.
    settings.background.instant_exit_timeout = 0.5
    settings.queueing.exit_timeout = 2.0
    return settings


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    runtime: Runtime | None = None,
    serve_metrics: bool = True,
) -> None:
    """Run until ``stop_flag`` (or a signal); metrics/health served on ``config.metrics_port``."""
    runtime = runtime or Runtime(config)
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    ready: asyncio.Event | threading.Event = ready_flag or asyncio.Event()

    async def kopf_ready() -> tuple[bool, dict[str, Any]]:
        return ready.is_set(), {"operator": "running" if ready.is_set() else "starting"}

    runner: web.AppRunner | None = None
    if serve_metrics:
        app = create_app("operator", registry=runtime.metrics.registry, readiness=[kopf_ready])
        runner = await serve(app, config.metrics_host, config.metrics_port)
    namespaces = config.namespace_list
    try:
        await kopf.operator(
            registry=registry,
            settings=make_settings(config),
            standalone=config.standalone,
            peering_name=None if config.standalone else config.peering_name,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop_flag,
            ready_flag=ready,
        )
    finally:
        if runtime.client is not None:
            await runtime.client.close()
            runtime.client = None
        if runner is not None:
            await runner.cleanup()
