"""Kopf wiring: login, create/update/resume/delete reconciles, the status + autoscaler timer.

Everything with logic lives in the Kopf-free modules (render, reconcile, status, autoscaler,
observe); handlers translate outcomes into Kopf's terms: status patches, Events, and
Temporary/PermanentError (a bad CR is reported as Degraded and retried slowly, never a crash).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import kopf
from opentelemetry import trace

from freshrank_operator import crd, reconcile, render
from freshrank_operator.autoscaler import Autoscaler, Decision, Policy
from freshrank_operator.config import OperatorConfig
from freshrank_operator.kube import Credentials, KubeClient
from freshrank_operator.login import kubeconfig_login
from freshrank_operator.observe import LatencyWindow
from freshrank_operator.status import Problem, conditions, merge_conditions, now_iso
from freshrank_operator.telemetry import OperatorMetrics
from freshrank_operator.triton_admin import ensure_triton_admin_secret

__all__ = ["Runtime", "register"]

log = logging.getLogger("freshrank.operator")
tracer = trace.get_tracer("freshrank.operator")
RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)


@dataclass
class ObjectState:
    """Per-CR memory between ticks (rebuilt after a restart by the resume handler)."""

    problems: list[Problem] = field(default_factory=list)
    autoscaler: Autoscaler | None = None
    window: LatencyWindow | None = None
    last_decision_at: float = 0.0


@dataclass
class Runtime:
    """What the handlers share: settings, the API client, metrics, per-object state."""

    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    client: KubeClient | None = None
    states: dict[str, ObjectState] = field(default_factory=dict)

    def state(self, uid: str) -> ObjectState:
        return self.states.setdefault(uid, ObjectState())

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
    )


def _status_conditions(
    body: Mapping[str, Any], problems: list[Problem], observation: reconcile.Observation | None
) -> list[dict[str, Any]]:
    previous = (body.get("status") or {}).get("conditions")
    current = conditions(observation.workloads if observation else [], problems)
    generation = body.get("metadata", {}).get("generation")
    return merge_conditions(previous, current, generation=generation)


def _set_status(patch: kopf.Patch, body: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Patch only the status keys whose value changed (no status churn, no event storms)."""
    current = body.get("status") or {}
    for key, value in values.items():
        if current.get(key) != value:
            patch.status[key] = value


def _generation(body: Mapping[str, Any]) -> int | None:
    value = body.get("metadata", {}).get("generation")
    return int(value) if value is not None else None


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every handler on ``registry`` (a fresh one per operator; tests get their own)."""
    config = runtime.config

    @kopf.on.login(registry=registry)
    def login(logger: Any, settings: Any, **_: Any) -> kopf.ConnectionInfo | None:
        return runtime.connection_info(logger, settings)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        # Closed by the runtime after Kopf returns: timers may still tick during shutdown.
        if runtime.client is None:
            runtime.client = KubeClient(runtime.credentials)

    retry = config.retry_seconds  # unexpected errors retry this soon (Kopf's default: 60 s)

    @kopf.on.resume(*RESOURCE, registry=registry, backoff=retry)
    @kopf.on.create(*RESOURCE, registry=registry, backoff=retry)
    @kopf.on.update(*RESOURCE, registry=registry, backoff=retry)
    async def reconcile_handler(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        start = time.perf_counter()
        outcome = "error"
        try:
            with tracer.start_as_current_span(
                "reconcile",
                attributes={
                    "k8s.namespace": body.meta.namespace or "",
                    "k8s.name": body.meta.name or "",
                },
            ):
                await _reconcile(runtime, dict(body), patch)
            outcome = "ok"
        except kopf.TemporaryError:
            outcome = "retry"
            raise
        except kopf.PermanentError:
            outcome = "invalid"
            raise
        finally:
            runtime.metrics.reconcile_seconds.labels("reconcile", outcome).observe(
                time.perf_counter() - start
            )

    @kopf.on.delete(*RESOURCE, registry=registry, backoff=retry)
    async def delete_handler(body: kopf.Body, logger: Any, **_: Any) -> None:
        with tracer.start_as_current_span("delete", attributes={"k8s.name": body.meta.name or ""}):
            deleted = await reconcile.delete_children(runtime.api(), dict(body))
        runtime.states.pop(body.meta.uid or "", None)
        logger.info(f"deleted {len(deleted)} children: {', '.join(deleted) or 'none'}")

    @kopf.timer(
        *RESOURCE,
        registry=registry,
        interval=config.tick_seconds,
        # The create/resume reconcile has just written status: first tick one period later
        # (100 CRs created at once otherwise start 100 duplicate observations at once).
        initial_delay=config.tick_seconds,
        backoff=config.tick_seconds,
    )
    async def tick(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        if body.meta.get("deletionTimestamp"):
            return
        await _tick(runtime, body, patch, logger)


async def _reconcile(runtime: Runtime, body: dict[str, Any], patch: kopf.Patch) -> None:
    config, client = runtime.config, runtime.api()
    meta = body["metadata"]
    state = runtime.state(meta["uid"])
    gauge = runtime.metrics.degraded.labels(meta["namespace"], meta["name"])

    def fail(
        problems: list[Problem], error: type[kopf.TemporaryError | kopf.PermanentError]
    ) -> NoReturn:
        state.problems = problems
        gauge.set(1)
        _set_status(patch, body, {"conditions": _status_conditions(body, problems, None)})
        message = "; ".join(p.message for p in problems)
        if error is kopf.TemporaryError:
            raise kopf.TemporaryError(message, delay=config.retry_seconds)
        raise kopf.PermanentError(message)

    invalid = crd.schema_errors(body)
    if invalid:
        fail([Problem("InvalidSpec", "; ".join(str(e) for e in invalid))], kopf.PermanentError)
    spec = render.defaulted(body.get("spec") or {})
    references = await reconcile.check_references(client, meta["namespace"], spec)
    if references.problems:
        fail(references.problems, kopf.TemporaryError)
    desired_replicas = (body.get("status") or {}).get("desiredReplicas")
    manifests = render.render(
        body,
        render.Desired(
            config.service_image,
            ranking_replicas=desired_replicas,
            operator_namespace=config.pod_namespace or None,
        ),
    )
    try:
        await ensure_triton_admin_secret(client, body)
        result = await reconcile.apply_children(client, body, manifests)
    except reconcile.KubeError as exc:
        fail([Problem("ChildApplyFailed", f"applying children: {exc}")], kopf.TemporaryError)
    for label in result.applied:
        runtime.metrics.children_applied.labels(label.split("/")[0]).inc()
    # A reconcile that wrote nothing (a resume, a repeated event) is routine: DEBUG.
    log.log(
        logging.INFO if result.applied or result.pruned else logging.DEBUG,
        "reconciled",
        extra={
            "cr": f"{meta['namespace']}/{meta['name']}",
            "applied": result.applied,
            "unchanged": len(result.unchanged),
            "pruned": result.pruned,
        },
    )
    if config.ensure_topics:
        try:
            await reconcile.ensure_kafka_topics(
                spec["kafka"]["bootstrapServers"],
                meta["name"],
                int(spec["kafka"]["partitions"]),
                config.kafka_timeout_seconds,
                references.kafka_credentials,
            )
        except Exception as exc:
            problem = Problem(
                "KafkaUnavailable",
                f"spec.kafka.bootstrapServers: could not ensure topics "
                f"{reconcile.topics_for(meta['name'])}: {exc}",
            )
            fail([problem], kopf.TemporaryError)
    state.problems = []
    gauge.set(0)
    observation = await reconcile.observe(client, body, result.live)
    selector = ",".join(
        f"{k}={v}" for k, v in render.selector_labels(meta["name"], "ranking").items()
    )
    _set_status(
        patch,
        body,
        {
            "observedGeneration": _generation(body),
            "conditions": _status_conditions(body, [], observation),
            "selector": selector,
            **({"replicas": observation.replicas} if observation.replicas is not None else {}),
        },
    )


def _autoscaler(state: ObjectState, autoscaling: Mapping[str, Any]) -> Autoscaler:
    policy = Policy.from_spec(autoscaling)
    if state.autoscaler is None:
        state.autoscaler = Autoscaler(policy)
    else:
        state.autoscaler.reconfigure(policy)
    window = float(autoscaling["windowSeconds"])
    if state.window is None or state.window.window_s != window:
        state.window = LatencyWindow(window)
    return state.autoscaler


async def _latency_p95(
    runtime: Runtime,
    body: Mapping[str, Any],
    autoscaling: Mapping[str, Any],
    state: ObjectState,
    observation: reconcile.Observation,
) -> float | None:
    client, meta = runtime.api(), body["metadata"]
    if autoscaling.get("prometheusUrl"):
        query = render.latency_query(meta["name"], meta["namespace"], autoscaling["windowSeconds"])
        try:
            return await reconcile.prometheus_p95_ms(client, autoscaling["prometheusUrl"], query)
        except Exception as exc:
            log.warning("prometheus query failed", extra={"error": str(exc)})
            return None
    pods = await reconcile.scrape_ranking_latency(
        client, meta["namespace"], meta["name"], observation.pods
    )
    assert state.window is not None
    state.window.add(time.monotonic(), pods)
    return state.window.p95_ms()


async def _scale(runtime: Runtime, body: kopf.Body, decision: Decision, logger: Any) -> None:
    """Apply the ranking Deployment with the decided replicas (same renderer, same owner)."""
    manifests = render.render(
        dict(body),
        render.Desired(
            runtime.config.service_image,
            ranking_replicas=decision.replicas,
            operator_namespace=runtime.config.pod_namespace or None,
        ),
    )
    name = f"{body['metadata']['name']}-ranking"
    for manifest in manifests:
        if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] == name:
            await runtime.api().apply(manifest)
    runtime.metrics.scale_decisions.labels(decision.direction).inc()
    message = f"ranking {decision.current} -> {decision.replicas}: {decision.reason}"
    logger.info(message)
    kopf.event(
        body,
        type="Normal",
        reason="ScaledUp" if decision.direction == "up" else "ScaledDown",
        message=message,
    )


async def _tick(runtime: Runtime, body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
    raw = dict(body)
    meta = raw["metadata"]
    state = runtime.state(meta["uid"])
    try:
        spec = render.defaulted(raw.get("spec") or {})
    except Exception:  # an invalid spec is reported by the reconcile handler
        return
    client = runtime.api()
    observation = await reconcile.observe(client, raw)
    values: dict[str, Any] = {
        "conditions": _status_conditions(raw, state.problems, observation),
    }
    if observation.replicas is not None:
        values["replicas"] = observation.replicas
    trainer = observation.trainer
    if trainer is not None:
        if trainer.model_version is not None:
            values["modelVersion"] = trainer.model_version
        if trainer.last_export_time is not None:
            values["lastExportTime"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(trainer.last_export_time)
            )
        freshness = trainer.freshness_s(time.time())
        if freshness is not None:
            values["freshnessSeconds"] = round(freshness, 1)
    autoscaling = spec["autoscaling"]
    if not state.problems:
        autoscaler = _autoscaler(state, autoscaling)
        p95 = await _latency_p95(runtime, raw, autoscaling, state, observation)
        if p95 is not None:
            values["latencyP95Ms"] = round(p95, 2)
            runtime.metrics.ranking_p95_ms.labels(meta["namespace"], meta["name"]).set(p95)
        operator_engine = autoscaling["enabled"] and autoscaling["engine"] == "operator"
        period_due = time.monotonic() - state.last_decision_at >= autoscaler.policy.period_s
        if operator_engine and observation.replicas is not None and period_due:
            state.last_decision_at = time.monotonic()
            decision = autoscaler.decide(observation.replicas, p95, time.monotonic())
            # Every period, for every CR: DEBUG (a change is logged and posted by _scale).
            log.debug(
                "autoscaler decision: %s -> %s (%s)",
                decision.current,
                decision.replicas,
                decision.reason,
                extra={
                    "cr": f"{meta['namespace']}/{meta['name']}",
                    "current": decision.current,
                    "replicas": decision.replicas,
                    "p95_ms": p95,
                    "reason": decision.reason,
                },
            )
            if decision.changed:
                await _scale(runtime, body, decision, logger)
                values["desiredReplicas"] = decision.replicas
                values["replicas"] = decision.replicas
                values["lastScaleTime"] = now_iso()
    _set_status(patch, raw, values)
