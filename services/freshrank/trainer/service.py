"""Wiring of the trainer: health/readiness/metrics app (port 8082) around the training loop.

SIGTERM or SIGINT stops it gracefully: the batch in hand is finished, a running export gets a
moment to complete, then a final checkpoint is written, offsets are committed and everything
is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from freshrank.core.http import create_app, serve
from freshrank.core.kafka import ensure_topics
from freshrank.core.model_repo import ModelRepository
from freshrank.trainer.checkpoint import CheckpointStore
from freshrank.trainer.exporter import Exporter, LiveTritonControl, TritonControl
from freshrank.trainer.learning import Learner, build_learner
from freshrank.trainer.loop import TrainerLoop
from freshrank.trainer.metrics import TrainerMetrics
from freshrank.trainer.settings import TrainerSettings

__all__ = ["build_trainer", "run_service"]

log = logging.getLogger(__name__)


def build_trainer(
    settings: TrainerSettings, registry: CollectorRegistry, learner: Learner | None = None
) -> TrainerLoop:
    metrics = TrainerMetrics(registry)
    control = LiveTritonControl if settings.triton_live else TritonControl
    triton = (
        control(settings.triton_host_port, settings.triton_admin_key.get_secret_value())
        if settings.triton_url
        else None
    )
    repository = ModelRepository(
        Path(settings.model_repository), settings.triton_model, manifest_keep=settings.manifest_keep
    )
    exporter = Exporter(
        repository,
        triton,
        metrics,
        keep_versions=settings.keep_versions,
        ready_timeout_s=settings.ready_timeout_s,
        watch_s=settings.watch_s,
    )
    return TrainerLoop(
        settings,
        learner or build_learner(settings),
        CheckpointStore(Path(settings.checkpoint_dir)),
        metrics,
        exporter=exporter,
        shadow_factory=lambda: build_learner(settings),
    )


async def run_service(
    settings: TrainerSettings,
    stop: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
    registry: CollectorRegistry | None = None,
) -> None:
    """Train and serve /healthz, /readyz, /metrics until ``stop`` (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await loop.run_in_executor(
        None, ensure_topics, settings.bootstrap_servers, [settings.events_topic, settings.dlq_topic]
    )
    registry = registry or CollectorRegistry()
    trainer = build_trainer(settings, registry)
    restored = False

    async def readiness() -> tuple[bool, dict[str, Any]]:
        return restored and trainer.assigned, {
            "restored": restored,
            "assigned": trainer.assigned,
            "events_trained": trainer.learner.events_trained,
        }

    app = create_app("trainer", registry=registry, readiness=[readiness])
    runner = await serve(app, settings.host, settings.port)
    exporter = trainer.exporter
    try:
        await trainer.restore()
        restored = True
        # From the start: Triton may hold nothing (it restarted) while the stream is quiet.
        watchdog = asyncio.ensure_future(exporter.watch(stop)) if exporter else None
        await trainer.run(stop)
        if watchdog is not None:  # stop at once, even mid-load: the checkpoint is written
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    finally:
        if exporter is not None:
            await exporter.close()
        await runner.cleanup()
    log.info("trainer stopped", extra={"events_trained": trainer.learner.events_trained})
