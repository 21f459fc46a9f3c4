"""Reconciliation steps (async, Kopf-free): check references, apply and prune children,
ensure topics, observe the services. ``handlers`` wires these into Kopf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from freshrank_operator import render
from freshrank_operator.kube import KubeClient, KubeError, NotFound
from freshrank_operator.observe import Buckets, TrainerReport, parse_latency_buckets
from freshrank_operator.status import Problem, WorkloadState, workload_state

__all__ = [
    "CHILD_KINDS",
    "ApplyResult",
    "Observation",
    "apply_children",
    "delete_children",
    "ensure_kafka_topics",
    "observe",
    "owned_children",
    "reference_problems",
    "scrape_ranking_latency",
]

tracer = trace.get_tracer("freshrank.operator")
log = logging.getLogger("freshrank.operator")

# Every kind the renderer can produce, for pruning and deletion.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
)


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


def _label(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _instance_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": render.MANAGED_BY}


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


async def reference_problems(
    client: KubeClient, namespace: str, spec: Mapping[str, Any]
) -> list[Problem]:
    """Secrets and claims the spec names but the namespace lacks (schema cannot see those)."""
    problems: list[Problem] = []
    secret = (spec.get("kafka") or {}).get("credentialsSecret")
    if secret and await client.get_or_none("v1", "Secret", namespace, secret["name"]) is None:
        problems.append(
            Problem(
                "KafkaSecretNotFound",
                f"spec.kafka.credentialsSecret.name: Secret {secret['name']!r} not found "
                f"in namespace {namespace!r}",
            )
        )
    dsn = (spec.get("featureStore") or {}).get("dsnSecret")
    if dsn:
        found = await client.get_or_none("v1", "Secret", namespace, dsn["name"])
        key = dsn.get("key", "dsn")
        if found is None:
            problems.append(
                Problem(
                    "FeatureStoreSecretNotFound",
                    f"spec.featureStore.dsnSecret.name: Secret {dsn['name']!r} not found "
                    f"in namespace {namespace!r}",
                )
            )
        elif key not in (found.get("data") or {}) and key not in (found.get("stringData") or {}):
            problems.append(
                Problem(
                    "FeatureStoreSecretKeyMissing",
                    f"spec.featureStore.dsnSecret.key: Secret {dsn['name']!r} has no key {key!r}",
                )
            )
    claim = ((spec.get("triton") or {}).get("modelRepository") or {}).get("claimName")
    if claim and await client.get_or_none("v1", "PersistentVolumeClaim", namespace, claim) is None:
        problems.append(
            Problem(
                "ModelRepositoryClaimNotFound",
                f"spec.triton.modelRepository.claimName: PersistentVolumeClaim {claim!r} "
                f"not found in namespace {namespace!r}",
            )
        )
    return problems


async def _apply_one(client: KubeClient, manifest: Mapping[str, Any]) -> bool:
    """Apply when the live object's hash differs; True when it wrote."""
    meta = manifest["metadata"]
    live = await client.get_or_none(
        manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
    )
    wanted = meta["annotations"][render.SPEC_HASH_ANNOTATION]
    if live is not None:
        have = (live.get("metadata", {}).get("annotations") or {}).get(render.SPEC_HASH_ANNOTATION)
        if have == wanted:
            return False
    with tracer.start_as_current_span(
        "apply", attributes={"k8s.kind": manifest["kind"], "k8s.name": meta["name"]}
    ):
        await client.apply(manifest)
    return True


async def owned_children(
    client: KubeClient, namespace: str, name: str, uid: str
) -> list[dict[str, Any]]:
    """Every live child of the CR, of every kind the renderer produces."""

    async def of_kind(api_version: str, kind: str) -> list[dict[str, Any]]:
        try:
            items = await client.list(api_version, kind, namespace, labels=_instance_labels(name))
        except NotFound:  # e.g. KEDA not installed: there can be no ScaledObjects
            return []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return [i for i in items if _owned_by(i, uid)]

    groups = await asyncio.gather(*(of_kind(v, k) for v, k in CHILD_KINDS))
    return [item for group in groups for item in group]


async def apply_children(
    client: KubeClient, cr: Mapping[str, Any], manifests: Sequence[Mapping[str, Any]]
) -> ApplyResult:
    """Apply what changed, then delete owned children the rendering no longer contains."""
    result = ApplyResult()
    wrote = await asyncio.gather(*(_apply_one(client, m) for m in manifests))
    for manifest, changed in zip(manifests, wrote, strict=True):
        (result.applied if changed else result.unchanged).append(_label(manifest))
    meta = cr["metadata"]
    wanted = {render.child_key(m) for m in manifests}
    live = await owned_children(client, meta["namespace"], meta["name"], meta["uid"])
    for obj in live:
        key = (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        if key not in wanted:
            await client.delete(key[0], key[1], meta["namespace"], key[2])
            result.pruned.append(f"{key[1]}/{key[2]}")
    return result


async def delete_children(client: KubeClient, cr: Mapping[str, Any]) -> list[str]:
    """Delete every child (the API server's GC would too; the emulator has none)."""
    meta = cr["metadata"]
    deleted = []
    for obj in await owned_children(client, meta["namespace"], meta["name"], meta["uid"]):
        name = obj["metadata"]["name"]
        if await client.delete(obj["apiVersion"], obj["kind"], meta["namespace"], name):
            deleted.append(f"{obj['kind']}/{name}")
    return deleted


def topics_for(name: str) -> list[str]:
    return [f"{name}.events", f"{name}.events.dlq"]


async def ensure_kafka_topics(bootstrap: str, name: str, partitions: int, timeout: float) -> None:
    """Create ``<name>.events`` and its DLQ if missing (blocking admin calls off the loop)."""
    from freshrank.core.kafka import ensure_topics

    loop = asyncio.get_running_loop()
    with tracer.start_as_current_span("ensure_topics", attributes={"kafka.bootstrap": bootstrap}):
        await loop.run_in_executor(
            None,
            lambda: ensure_topics(
                bootstrap, topics_for(name), partitions=partitions, timeout=timeout
            ),
        )


@dataclass(frozen=True)
class Observation:
    workloads: list[WorkloadState]
    trainer: TrainerReport | None
    replicas: int | None  # ranking Deployment's current spec.replicas
    ready_replicas: int | None


def _pod_url(pod: Mapping[str, Any], default_port: int) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or (pod.get("status") or {}).get("phase") != "Running":
        return None
    port = default_port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == "http":
                port = int(declared["containerPort"])
    return f"http://{ip}:{port}/metrics"


async def _pod_metrics(
    client: KubeClient, namespace: str, name: str, component: str
) -> dict[str, str]:
    pods = await client.list("v1", "Pod", namespace, labels=render.selector_labels(name, component))
    urls = {
        p["metadata"]["name"]: url
        for p in pods
        if (url := _pod_url(p, render.PORTS[component])) is not None
    }

    async def fetch(url: str) -> str | None:
        try:
            return await client.http_get_text(url)
        except Exception as exc:  # a pod that does not answer has no samples this time
            log.info("scrape failed", extra={"url": url, "error": repr(exc)})
            return None

    texts = await asyncio.gather(*(fetch(u) for u in urls.values()))
    return {pod: text for pod, text in zip(urls, texts, strict=True) if text is not None}


async def scrape_ranking_latency(
    client: KubeClient, namespace: str, name: str
) -> dict[str, Buckets]:
    """Each ranking pod's cumulative latency buckets for /v1/rank."""
    texts = await _pod_metrics(client, namespace, name, "ranking")
    return {pod: parse_latency_buckets(text) for pod, text in texts.items()}


async def prometheus_p95_ms(client: KubeClient, url: str, query: str) -> float | None:
    import json
    from urllib.parse import urlencode

    text = await client.http_get_text(
        f"{url.rstrip('/')}/api/v1/query?{urlencode({'query': query})}", timeout=5.0
    )
    result = json.loads(text).get("data", {}).get("result") or []
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value * 1000.0  # NaN: no requests in the window


async def observe(client: KubeClient, cr: Mapping[str, Any]) -> Observation:
    meta = cr["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    workloads: list[WorkloadState] = []
    replicas = ready = None
    for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
        for obj in await client.list(api_version, kind, namespace, labels=_instance_labels(name)):
            if not _owned_by(obj, uid):
                continue
            state = workload_state(obj)
            workloads.append(state)
            if state.component == "ranking":
                replicas, ready = state.desired, state.ready
    workloads.sort(
        key=lambda w: (
            ["feature", "trainer", "triton", "ranking"].index(w.component)
            if w.component in {"feature", "trainer", "triton", "ranking"}
            else 99
        )
    )
    trainer_texts = await _pod_metrics(client, namespace, name, "trainer")
    trainer = None
    for text in trainer_texts.values():
        trainer = TrainerReport.from_metrics(text)
    return Observation(workloads, trainer, replicas, ready)


def now() -> float:
    return time.time()


__all__ += ["KubeError", "now", "prometheus_p95_ms", "topics_for"]
