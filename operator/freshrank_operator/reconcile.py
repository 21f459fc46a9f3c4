"""Reconciliation steps (async, Kopf-free): check references, apply and prune children,
ensure topics, observe the services. ``handlers`` wires these into Kopf.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from freshrank.core.contracts import routes
from freshrank_operator import render
from freshrank_operator.kube import (
    FIELD_MANAGER,
    KubeClient,
    KubeError,
    NotFound,
    ResourceTypeMissing,
    plural,
)
from freshrank_operator.observe import Buckets, TrainerReport, parse_latency_buckets
from freshrank_operator.status import Problem, WorkloadState, workload_state

if TYPE_CHECKING:
    from freshrank.core.kafka import KafkaCredentials
    from freshrank_operator.spec import RecommenderSpec

__all__ = [
    "CHILD_KINDS",
    "HANDOVER_MANAGER",
    "ApplyResult",
    "ChildFailure",
    "Observation",
    "References",
    "apply_children",
    "check_references",
    "child_field",
    "edited_by_others",
    "ensure_kafka_topics",
    "manifest_paths",
    "observe",
    "owned_children",
    "owns_field",
    "reference_problems",
    "scrape_ranking_latency",
    "secret_value",
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
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def _label(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _instance_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": render.MANAGED_BY}


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


@dataclass(frozen=True)
class References:
    """What the spec's references resolved to: problems (each names its field), and the
    Kafka credentials read from ``spec.kafka.credentialsSecret`` (None: plaintext)."""

    problems: list[Problem]
    kafka_credentials: KafkaCredentials | None = None


async def reference_problems(
    client: KubeClient, namespace: str, spec: RecommenderSpec
) -> list[Problem]:
    """Secrets and claims the spec names but the namespace lacks (schema cannot see those)."""
    return (await check_references(client, namespace, spec)).problems


def secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """A Secret's value for ``key`` (``data`` is base64; ``stringData`` as written)."""
    encoded = (secret.get("data") or {}).get(key)
    if encoded is not None:
        return base64.b64decode(encoded, validate=True).decode()
    plain = (secret.get("stringData") or {}).get(key)
    return None if plain is None else str(plain)


async def _kafka_credentials(
    client: KubeClient, namespace: str, spec: RecommenderSpec
) -> tuple[KafkaCredentials | None, list[Problem]]:
    from freshrank.core.kafka import CREDENTIAL_KEYS, KafkaCredentials, MissingCredential

    reference = spec.kafka.credentials_secret
    if reference is None:
        return None, []
    name = reference.name
    secret = await client.get_or_none("v1", "Secret", namespace, name)
    if secret is None:
        return None, [
            Problem(
                "KafkaSecretNotFound",
                f"spec.kafka.credentialsSecret.name: Secret {name!r} not found "
                f"in namespace {namespace!r}",
            )
        ]
    try:
        values = {key: secret_value(secret, key) for key in CREDENTIAL_KEYS}
        return KafkaCredentials.from_values(values), []
    except MissingCredential as missing:
        required = ", ".join(k for k, f in CREDENTIAL_KEYS.items() if f.required)
        message = f"Secret {name!r} has no key {missing.key!r} (required: {required})"
    except (ValueError, UnicodeDecodeError) as exc:  # bad base64 / not UTF-8
        message = f"Secret {name!r} has an unreadable value: {exc}"
    return None, [Problem("KafkaSecretKeyMissing", f"spec.kafka.credentialsSecret.name: {message}")]


async def check_references(client: KubeClient, namespace: str, spec: RecommenderSpec) -> References:
    """Resolve the Secrets and claims the spec names (the schema cannot see those)."""
    credentials, problems = await _kafka_credentials(client, namespace, spec)
    dsn = spec.feature_store.dsn_secret
    if dsn is not None:
        found = await client.get_or_none("v1", "Secret", namespace, dsn.name)
        key = dsn.key
        if found is None:
            problems.append(
                Problem(
                    "FeatureStoreSecretNotFound",
                    f"spec.featureStore.dsnSecret.name: Secret {dsn.name!r} not found "
                    f"in namespace {namespace!r}",
                )
            )
        elif key not in (found.get("data") or {}) and key not in (found.get("stringData") or {}):
            problems.append(
                Problem(
                    "FeatureStoreSecretKeyMissing",
                    f"spec.featureStore.dsnSecret.key: Secret {dsn.name!r} has no key {key!r}",
                )
            )
    claim = spec.triton.model_repository.claim_name
    if claim and await client.get_or_none("v1", "PersistentVolumeClaim", namespace, claim) is None:
        problems.append(
            Problem(
                "ModelRepositoryClaimNotFound",
                f"spec.triton.modelRepository.claimName: PersistentVolumeClaim {claim!r} "
                f"not found in namespace {namespace!r}",
            )
        )
    return References(problems, credentials)


def _spec_hash(obj: Mapping[str, Any]) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(render.SPEC_HASH_ANNOTATION)
    return None if value is None else str(value)


# Holds a Deployment's replicas while the operator hands them to an HPA or KEDA (see
# _hand_over_replicas); the autoscaler's controller takes the field from it on its first scale.
HANDOVER_MANAGER = "freshrank-handover"


def owns_field(obj: Mapping[str, Any], manager: str, *path: str) -> bool:
    """Whether ``manager``'s server-side apply owns the field at ``path`` (managedFields)."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields = entry.get("fieldsV1") or {}
        for part in path:
            fields = fields.get(f"f:{part}")
            if not isinstance(fields, dict):
                break
        else:
            return True
    return False


async def _hand_over_replicas(
    client: KubeClient, manifest: Mapping[str, Any], live: Mapping[str, Any] | None
) -> None:
    """Keep a Deployment's replicas when the rendering stops setting them (engine -> hpa).

    Server-side apply removes a field its last manager releases: the Deployment would fall
    back to 1 replica before the HPA acts. As Kubernetes documents for handing a field to
    an HPA, a second manager first applies the current value, so the field survives the
    operator's release until the HPA's controller takes it.
    """
    if (
        manifest["kind"] != "Deployment"
        or live is None
        or "replicas" in manifest.get("spec", {})
        or (live.get("spec") or {}).get("replicas") is None
        or not owns_field(live, FIELD_MANAGER, "spec", "replicas")
    ):
        return
    meta = manifest["metadata"]
    await client.apply(
        {
            "apiVersion": manifest["apiVersion"],
            "kind": manifest["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": live["spec"]["replicas"]},
        },
        field_manager=HANDOVER_MANAGER,
    )


Path = tuple[str, ...]


def manifest_paths(manifest: Mapping[str, Any], prefix: Path = ()) -> frozenset[Path]:
    """The field paths a manifest sets; a list counts as one path (its items are not keyed
    the way managedFields keys them)."""
    paths: set[Path] = set()
    for key, value in manifest.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            paths |= manifest_paths(value, path)
        else:
            paths.add(path)
    return frozenset(paths)


def _entry_paths(fields: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """A managedFields entry's fieldsV1 as paths (``f:name`` steps; a list item ends one)."""
    paths: set[Path] = set()
    for key, value in fields.items():
        if key.startswith("f:"):
            path = (*prefix, key[2:])
            inner = _entry_paths(value, path) if isinstance(value, Mapping) else set()
            paths |= inner or {path}
        elif key != ".":
            paths.add(prefix)  # k:/v:/i: list items: the list itself
    return paths


def edited_by_others(obj: Mapping[str, Any], rendered: frozenset[Path]) -> bool:
    """Whether another writer changed a field the operator renders since its last apply.

    managedFields says who last wrote which fields, and when: an entry of another manager on
    the object itself (not a status or scale subresource, which controllers own) at or after
    the operator's apply, touching a rendered field, is an edit the rendering must win back.
    Fields the operator does not render (a controller's annotations) are not drift.
    """
    entries = obj.get("metadata", {}).get("managedFields") or []
    ours = [str(e.get("time", "")) for e in entries if e.get("manager") == FIELD_MANAGER]
    if not ours:
        return False
    applied = max(ours)
    for entry in entries:
        if (
            entry.get("manager") in {FIELD_MANAGER, HANDOVER_MANAGER}
            or entry.get("subresource")
            or str(entry.get("time", "")) < applied
        ):
            continue
        for path in _entry_paths(entry.get("fieldsV1") or {}):
            if any(path[: len(mine)] == mine for mine in rendered):
                return True
    return False


async def _apply_one(
    client: KubeClient, manifest: Mapping[str, Any], live: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Apply unless the live child already carries this rendering's hash (and nobody else
    edited it since).

    Returns the object the server answered, or None when nothing was written.
    """
    if (
        live is not None
        and _spec_hash(live) == _spec_hash(manifest)
        and not edited_by_others(live, manifest_paths(manifest))
    ):
        return None
    meta = manifest["metadata"]
    with tracer.start_as_current_span(
        "apply", attributes={"k8s.kind": manifest["kind"], "k8s.name": meta["name"]}
    ):
        await _hand_over_replicas(client, manifest, live)
        written = await client.apply(manifest)
    written.setdefault("apiVersion", manifest["apiVersion"])
    written.setdefault("kind", manifest["kind"])
    return written


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


# Which part of the CR each child renders (named in problems so the user knows what to fix).
_COMPONENT_FIELDS = {
    "config": "spec.kafka, spec.telemetry",
    "feature": "spec.featureStore",
    "models": "spec.triton.modelRepository",
    "trainer": "spec.trainer",
    "triton": "spec.triton",
    "ranking": "spec.ranking",
}


def child_field(manifest: Mapping[str, Any]) -> str:
    """The CR field a child is rendered from, e.g. ``spec.autoscaling.engine`` for an HPA."""
    if manifest["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}:
        return "spec.autoscaling.engine"
    labels = manifest.get("metadata", {}).get("labels") or {}
    return _COMPONENT_FIELDS.get(str(labels.get("app.kubernetes.io/component")), "spec")


def _plural(api_version: str, kind: str) -> str:
    group = api_version.split("/")[0] if "/" in api_version else ""
    return f"{plural(api_version, kind)}.{group}" if group else plural(api_version, kind)


def _failure_message(manifest: Mapping[str, Any], exc: KubeError) -> str:
    if isinstance(exc, ResourceTypeMissing):
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        installer = " (KEDA is not installed)" if kind == "ScaledObject" else ""
        return (
            f"the {kind} API {api_version} is not served by this cluster: "
            f"its CRD {_plural(api_version, kind)} is missing{installer}"
        )
    return str(exc)


@dataclass(frozen=True)
class ChildFailure:
    child: str  # Kind/name
    field: str  # the CR field it is rendered from
    message: str


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    # Every rendered child as the server holds it after the apply (what it answered, or
    # what was live when nothing was written): enough to observe without relisting.
    live: list[dict[str, Any]] = field(default_factory=list)
    # Objects with a child's name that the CR does not own: never applied over, never pruned.
    foreign: list[str] = field(default_factory=list)
    failed: list[ChildFailure] = field(default_factory=list)

    def problems(self, namespace: str) -> list[Problem]:
        """One problem per child that is not as rendered, each naming the child."""
        problems = [
            Problem(
                "ChildNotOwned",
                f"{child}: an object of that name already exists in namespace {namespace!r} "
                "and is not owned by this RecommenderDeployment; it is left untouched "
                "(rename or delete it, or rename the RecommenderDeployment)",
            )
            for child in self.foreign
        ]
        problems += [
            Problem("ChildApplyFailed", f"{f.child} ({f.field}): {f.message}") for f in self.failed
        ]
        return problems


async def apply_children(
    client: KubeClient,
    cr: Mapping[str, Any],
    manifests: Sequence[Mapping[str, Any]],
    live: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
) -> ApplyResult:
    """Apply what changed, then delete owned children the rendering no longer contains.

    ``live``: the CR's owned children by (apiVersion, kind, name), from the operator's
    watches; without it one label-selected list per kind is made. A child missing there is
    looked up by name before it is applied: an object the CR does not own (a user's
    ConfigMap of the same name) is reported in ``foreign`` and left untouched, never
    adopted. Every child is attempted; each failure is reported, not only the first.
    """
    result = ApplyResult()
    meta = cr["metadata"]
    if live is None:
        listed = await owned_children(client, meta["namespace"], meta["name"], meta["uid"])
        live = {_live_key(obj): obj for obj in listed}

    async def one(manifest: Mapping[str, Any]) -> None:
        label, key = _label(manifest), render.child_key(manifest)
        current = live.get(key)
        try:
            if current is None:
                current = await client.get_or_none(key[0], key[1], meta["namespace"], key[2])
                if current is not None and not _owned_by(current, meta["uid"]):
                    result.foreign.append(label)
                    return
            answer = await _apply_one(client, manifest, current)
        except KubeError as exc:
            result.failed.append(
                ChildFailure(label, child_field(manifest), _failure_message(manifest, exc))
            )
            return
        (result.applied if answer is not None else result.unchanged).append(label)
        result.live.append(answer if answer is not None else dict(current or {}))

    await asyncio.gather(*(one(m) for m in manifests))
    order = {_label(m): i for i, m in enumerate(manifests)}  # reports in rendering order
    result.foreign.sort(key=order.__getitem__)
    result.failed.sort(key=lambda f: order[f.child])
    wanted = {render.child_key(m) for m in manifests}
    for key in list(live):
        if key not in wanted:
            await client.delete(key[0], key[1], meta["namespace"], key[2])
            result.pruned.append(f"{key[1]}/{key[2]}")
    return result


def _live_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def topics_for(name: str) -> list[str]:
    return [f"{name}.events", f"{name}.events.dlq"]


async def ensure_kafka_topics(
    bootstrap: str,
    name: str,
    partitions: int,
    timeout: float,
    credentials: KafkaCredentials | None = None,
) -> None:
    """Create ``<name>.events`` and its DLQ if missing (blocking admin calls off the loop)."""
    from freshrank.core.kafka import ensure_topics

    loop = asyncio.get_running_loop()
    with tracer.start_as_current_span("ensure_topics", attributes={"kafka.bootstrap": bootstrap}):
        await loop.run_in_executor(
            None,
            lambda: ensure_topics(
                bootstrap,
                topics_for(name),
                partitions=partitions,
                timeout=timeout,
                credentials=credentials,
            ),
        )


@dataclass(frozen=True)
class Observation:
    workloads: list[WorkloadState]
    trainer: TrainerReport | None
    replicas: int | None  # ranking Deployment's current spec.replicas
    ready_replicas: int | None
    pods: list[dict[str, Any]] = field(default_factory=list)  # the CR's pods, every component


def _pod_url(pod: Mapping[str, Any], default_port: int) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or (pod.get("status") or {}).get("phase") != "Running":
        return None
    port = default_port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == "http":
                port = int(declared["containerPort"])
    return f"http://{ip}:{port}{routes.METRICS}"


async def _instance_pods(client: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    """Every pod of the CR in one list (split by component here, not by one list each).

    Pods carry the template's selector labels only (no managed-by), so select on the instance.
    """
    return await client.list("v1", "Pod", namespace, labels={"app.kubernetes.io/instance": name})


async def _pod_metrics(
    client: KubeClient, pods: Sequence[Mapping[str, Any]], component: str
) -> dict[str, str]:
    urls = {
        p["metadata"]["name"]: url
        for p in pods
        if (p.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component")
        == component
        and (url := _pod_url(p, render.PORTS[component])) is not None
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
    client: KubeClient,
    namespace: str,
    name: str,
    pods: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Buckets]:
    """Each ranking pod's cumulative latency buckets for /v1/rank (``pods``: already listed)."""
    if pods is None:
        pods = await _instance_pods(client, namespace, name)
    texts = await _pod_metrics(client, pods, "ranking")
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


async def observe(
    client: KubeClient,
    cr: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]] | None = None,
    *,
    pods: Sequence[Mapping[str, Any]] | None = None,
    failures: Mapping[str, tuple[str, str]] | None = None,
) -> Observation:
    """Workload readiness, the trainer's report and the ranking replicas of ``cr``.

    ``children`` and ``pods``: what the operator's watches hold; each is listed when not
    given. ``failures``: a workload's failure reported outside its status, by child name
    (a StatefulSet's FailedCreate Event).
    """
    meta = cr["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    if pods is None:
        pods = await _instance_pods(client, namespace, name)
    pod_list = [dict(p) for p in pods]
    if children is None:
        deployments, statefulsets = await asyncio.gather(
            client.list("apps/v1", "Deployment", namespace, labels=_instance_labels(name)),
            client.list("apps/v1", "StatefulSet", namespace, labels=_instance_labels(name)),
        )
        for obj in deployments:
            obj.setdefault("kind", "Deployment")
        for obj in statefulsets:
            obj.setdefault("kind", "StatefulSet")
        children = [*deployments, *statefulsets]
    workloads: list[WorkloadState] = []
    replicas = ready = None
    for child in children:
        if child.get("kind") not in {"Deployment", "StatefulSet"} or not _owned_by(child, uid):
            continue
        state = workload_state(child, (failures or {}).get(child["metadata"]["name"]))
        workloads.append(state)
        if state.component == "ranking":
            replicas, ready = state.desired, state.ready
    workloads.sort(key=_component_order)
    trainer = None
    for text in (await _pod_metrics(client, pod_list, "trainer")).values():
        trainer = TrainerReport.from_metrics(text)
    return Observation(workloads, trainer, replicas, ready, pod_list)


def _component_order(workload: WorkloadState) -> int:
    order = ["feature", "trainer", "triton", "ranking"]
    return order.index(workload.component) if workload.component in order else len(order)


def now() -> float:
    return time.time()


__all__ += ["KubeError", "now", "prometheus_p95_ms", "topics_for"]
