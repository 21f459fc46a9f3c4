"""Running the operator: Kopf settings, the health/metrics server, and ``kopf.operator``."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

import kopf
from aiohttp import web

from freshrank.core.http import create_app, serve
from freshrank_operator import crd
from freshrank_operator.config import OperatorConfig
from freshrank_operator.crd import API_VERSION, KIND
from freshrank_operator.handlers import Runtime, register
from freshrank_operator.kube import KubeClient
from freshrank_operator.leader import LeadershipLost, LeaseElector

__all__ = ["make_settings", "run_operator"]

PREFIX = "freshrank.io"
CRD_CHECK_SECONDS = 10.0  # /readyz re-checks that the CRD is served at most this often
log = logging.getLogger("freshrank.operator")


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


class _Processing:
    """What /readyz reports: ready only while this replica does its part.

    The leader (or a replica without leader election) is ready once Kopf is running and it can
    list RecommenderDeployments (no CRD, no RBAC: nothing would ever be processed); a
    standby is ready while it follows a leader that renews the Lease. Everything else (Kopf
    starting, the CRD missing, a Lease nobody renews) is 503, with the reason in the body.
    """

    def __init__(self, runtime: Runtime, kopf_ready: asyncio.Event | threading.Event) -> None:
        self.runtime = runtime
        self.kopf_ready = kopf_ready
        self.elector: LeaseElector | None = None
        self._checked_at = -CRD_CHECK_SECONDS
        self._unserved: str | None = "not checked yet"

    async def _why_not_served(self) -> str | None:
        """None when the operator can list RecommenderDeployments; else why not."""
        if time.monotonic() - self._checked_at < CRD_CHECK_SECONDS:
            return self._unserved
        client = self.runtime.client
        if client is None:
            return "no API client yet"
        namespaces = self.runtime.config.namespace_list
        try:
            await client.list(API_VERSION, KIND, namespaces[0] if namespaces else None, limit=1)
            self._unserved = None
        except Exception as exc:  # 404: no CRD; 403: no RBAC; unreachable API server
            self._unserved = f"cannot list {crd.PLURAL}.{crd.GROUP}: {exc}"
        self._checked_at = time.monotonic()
        return self._unserved

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        elector = self.elector
        if elector is not None and not elector.leading:
            following = elector.held_by_another()
            state = "standby" if following else "no leader"
            return following, {"operator": state, "leader": elector.holder}
        if not self.kopf_ready.is_set():
            return False, {"operator": "starting"}
        why = await self._why_not_served()
        if why is not None:
            return False, {"operator": "not processing", "reason": why}
        return True, {"operator": "running"}


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    runtime: Runtime | None = None,
    serve_metrics: bool = True,
) -> None:
    """Run until ``stop_flag`` (or a signal); metrics/health served on ``config.metrics_port``.

    With ``config.leader_election`` Kopf runs only while this replica holds the Lease; losing
    it raises ``LeadershipLost`` (the process exits, and restarts as a standby).
    """
    runtime = runtime or Runtime(config)
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    ready: asyncio.Event | threading.Event = ready_flag or asyncio.Event()
    processing = _Processing(runtime, ready)
    runner: web.AppRunner | None = None
    if serve_metrics:
        app = create_app("operator", registry=runtime.metrics.registry, readiness=[processing])
        runner = await serve(app, config.metrics_host, config.metrics_port)
    try:
        if config.leader_election:
            processing.elector = _elector(config, runtime)
            if not await processing.elector.acquire(stop_flag):
                return
            await _lead(processing.elector, _kopf(config, registry, stop_flag, ready))
        else:
            if not config.standalone:
                await _require_peering(runtime)
            await _kopf(config, registry, stop_flag, ready)
    finally:
        if processing.elector is not None:
            await processing.elector.release()
        if runtime.client is not None:
            await runtime.client.close()
            runtime.client = None
        if runner is not None:
            await runner.cleanup()


def _elector(config: OperatorConfig, runtime: Runtime) -> LeaseElector:
    if not config.pod_namespace:
        raise ValueError("--leader-election needs --pod-namespace (where the Lease lives)")
    if runtime.client is None:  # the startup handler keeps it
        runtime.client = KubeClient(runtime.credentials)
    return LeaseElector(
        runtime.client,
        config.pod_namespace,
        config.lease_name,
        config.pod_name or socket.gethostname(),
        lease_seconds=config.lease_seconds,
        renew_seconds=max(0.2, config.lease_seconds / 7),
    )


async def _kopf(
    config: OperatorConfig,
    registry: kopf.OperatorRegistry,
    stop_flag: asyncio.Event | threading.Event | None,
    ready: asyncio.Event | threading.Event,
) -> None:
    namespaces = config.namespace_list
    await kopf.operator(
        registry=registry,
        settings=make_settings(config),
        standalone=config.standalone or config.leader_election,
        peering_name=None if config.standalone or config.leader_election else config.peering_name,
        clusterwide=not namespaces,
        namespaces=namespaces,
        stop_flag=stop_flag,
        ready_flag=ready,
    )


async def _lead(elector: LeaseElector, operator: Coroutine[Any, Any, None]) -> None:
    """Run Kopf while renewing the Lease; a lost Lease stops Kopf and raises."""
    kopf_task = asyncio.ensure_future(operator)
    keep_task = asyncio.ensure_future(elector.keep())
    try:
        await asyncio.wait({kopf_task, keep_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (kopf_task, keep_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(kopf_task, keep_task, return_exceptions=True)
    if keep_task.done() and not keep_task.cancelled() and keep_task.exception() is not None:
        log.error("leadership lost: stopping", extra={"error": str(keep_task.exception())})
        raise LeadershipLost(str(keep_task.exception()))
    kopf_task.result()


async def _require_peering(runtime: Runtime) -> None:
    """Kopf peering without its CRDs processes nothing and says nothing: refuse to start."""
    if runtime.client is None:
        runtime.client = KubeClient(runtime.credentials)
    namespaces = runtime.config.namespace_list
    peering = ("KopfPeering", namespaces[0]) if namespaces else ("ClusterKopfPeering", None)
    if not await runtime.client.served("kopf.dev/v1", *peering):
        raise SystemExit(
            "--standalone=false needs Kopf's peering CRDs (kopf.dev/v1 is not served); "
            "use --leader-election for several replicas"
        )
