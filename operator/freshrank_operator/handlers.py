"""Kopf wiring: login, and the watches that feed the change-driven controller.

Kopf owns the watches (one stream per kind, whatever the number of CRs); every handler here
only hands the event to ``controller.Controller``, whose per-CR workers reconcile and write
status. There are no create/update/delete handlers and no timers on the CR: Kopf's
change-detection annotations and its finalizer are not used (``controller`` says why).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from freshrank_operator import crd, render
from freshrank_operator.config import OperatorConfig
from freshrank_operator.controller import Controller
from freshrank_operator.kube import Credentials, KubeClient, plural
from freshrank_operator.login import kubeconfig_login
from freshrank_operator.telemetry import OperatorMetrics

__all__ = ["Runtime", "register"]

log = logging.getLogger("freshrank.operator")
RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)


@dataclass
class Runtime:
    """What the handlers share: settings, the API client, metrics, the controller."""

    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    client: KubeClient | None = None
    controller: Controller | None = None

    def api(self) -> KubeClient:
        if self.client is None:
            raise kopf.TemporaryError("the Kubernetes client is not ready yet", delay=1)
        return self.client

    def connection_info(self, logger: Any, settings: Any) -> kopf.ConnectionInfo | None:
        if self.config.api_server:
            return kopf.ConnectionInfo(server=self.config.api_server, insecure=True)
        return kubeconfig_login(
            self.config.kubeconfig, trust_env=bool(settings.networking.trust_env)
        )

    async def credentials(self) -> Credentials:
        info = self.connection_info(log, kopf.OperatorSettings())
        if info is None:
            raise RuntimeError("no Kubernetes credentials (in-cluster, kubeconfig or --api-server)")
        return credentials_from(info)


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _path(value: Any) -> str | None:
    return None if value is None else str(value)


def credentials_from(info: kopf.ConnectionInfo) -> Credentials:
    return Credentials(
        server=info.server,
        token=info.token,
        scheme=info.scheme,
        username=info.username,
        password=info.password,
        ca_path=_path(info.ca_path),
        ca_data=_bytes(info.ca_data),
        certificate_path=_path(info.certificate_path),
        certificate_data=_bytes(info.certificate_data),
        private_key_path=_path(info.private_key_path),
        private_key_data=_bytes(info.private_key_data),
        insecure=bool(info.insecure),
        trust_env=bool(info.trust_env),
    )


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every handler on ``registry`` (a fresh one per operator; tests get their own)."""
    config = runtime.config

    @kopf.on.login(registry=registry)
    def login(logger: Any, settings: Any, **_: Any) -> kopf.ConnectionInfo | None:
        return runtime.connection_info(logger, settings)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        # Closed by the runtime after Kopf returns (after the cleanup stopped the workers).
        if runtime.client is None:
            runtime.client = KubeClient(runtime.credentials)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if runtime.controller is not None:
            await runtime.controller.stop()

    def controller() -> Controller:
        if runtime.controller is None:
            runtime.controller = Controller(config, runtime.api, runtime.metrics)
        return runtime.controller

    @kopf.on.event(*RESOURCE, registry=registry)
    async def cr_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller().on_cr(type, body)

    managed = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
    for api_version, kind, resource in WATCHED_CHILDREN:
        _watch_children(registry, controller, api_version, kind, resource, managed)

    for api_version, plural_name in (
        *((api_version, resource) for api_version, _, resource in WATCHED_CHILDREN),
        ("v1", "persistentvolumeclaims"),
        ("v1", "secrets"),
        ("v1", "pods"),
    ):
        _listed_before_any_handler(registry, api_version, plural_name)

    @kopf.on.event("v1", "persistentvolumeclaims", registry=registry)
    async def claim_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        labels = body.get("metadata", {}).get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") == render.MANAGED_BY:
            controller().on_child(type, body, "v1", "PersistentVolumeClaim")
        controller().on_reference(type, body, "PersistentVolumeClaim")

    @kopf.on.event("v1", "secrets", registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller().on_reference(type, body, "Secret")

    @kopf.on.event(
        "v1",
        "pods",
        labels={"app.kubernetes.io/instance": kopf.PRESENT},
        registry=registry,
    )
    async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller().on_pod(type, body)

    @kopf.on.event("v1", "events", field="reason", value="FailedCreate", registry=registry)
    async def failed_create_event(body: kopf.Body, **_: Any) -> None:
        controller().on_failed_create(body)


# Children whose changes the operator follows (PersistentVolumeClaims: see claim_event).
# ScaledObjects are not watched: KEDA may be absent; the reconcile reads them by name.
# (apiVersion, kind, plural): Kopf watches by plural, as the client's resource classes name it.
WATCHED_CHILDREN = tuple(
    (api_version, kind, plural(api_version, kind))
    for api_version, kind in (
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    )
)


def _listed_before_any_handler(
    registry: kopf.OperatorRegistry, api_version: str, plural: str
) -> None:
    """Hold every handler until this kind's watch has listed once (an index that stores
    nothing: Kopf starts no handler before its indices are populated).

    Without it, a CR could be reconciled before the watch of a child kind was established on
    a busy start: a child created by that reconcile and deleted (or edited) before the watch's
    first LIST was never seen, so never rendered again until the periodic retry. With it,
    the watch resumes from its LIST's resourceVersion and sees every later change."""

    @kopf.index(api_version, plural, id=f"listed-{plural}", registry=registry)
    async def listed(**_: Any) -> None:
        return None


def _watch_children(
    registry: kopf.OperatorRegistry,
    controller: Any,
    api_version: str,
    kind: str,
    plural: str,
    labels: Mapping[str, str],
) -> None:
    @kopf.on.event(
        api_version,
        plural,
        id=f"child-{plural}",
        labels=dict(labels),
        registry=registry,
    )
    async def child_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller().on_child(type, body, api_version, kind)
