"""The change-driven control loop (Kopf-free): watch events in, one worker per CR, status out.

``handlers`` feeds this module the watch events Kopf receives: the RecommenderDeployments,
their children (labelled ``app.kubernetes.io/managed-by=freshrank-operator``), their pods,
Secrets and claims they reference, and FailedCreate Events. Nothing polls the API server:

- a CR is reconciled (children applied) when its generation is new to the operator (create,
  spec edit, operator start), when a Secret or claim it names changes, when one of its
  children is deleted or edited away from its rendering, or when a retry falls due;
- its status is refreshed when a child's status changes or a FailedCreate Event names one;
- only a CR with running pods ticks (the latency autoscaler, the trainer's metrics), and a tick
  reads pods, not the API server.

An idle CR therefore costs no API request: what the operator knows comes from watches whose
number does not grow with the number of CRs. Status is written only when a value changes.

No finalizer: children are garbage-collected by the API server through their
ownerReferences, and Kafka topics outlive the CR on purpose (a CR recreated under the same
name resumes its events; see docs/operator.md). A CR is never kept Terminating by a stopped
operator.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from freshrank_operator import crd, reconcile, render
from freshrank_operator.autoscaler import Autoscaler, Policy
from freshrank_operator.config import OperatorConfig
from freshrank_operator.kube import FIELD_MANAGER, KubeClient, NotFound
from freshrank_operator.observe import LatencyWindow
from freshrank_operator.reconcile import Observation
from freshrank_operator.spec import Autoscaling, InvalidSpec, RecommenderSpec, parse
from freshrank_operator.status import Problem, conditions, merge_conditions, now_iso
from freshrank_operator.telemetry import OperatorMetrics
from freshrank_operator.triton_admin import ensure_triton_admin_secret

__all__ = ["ChildCache", "Controller", "CrState", "event_manifest"]

log = logging.getLogger("freshrank.operator")
tracer = trace.get_tracer("freshrank.operator")

Key = tuple[str, str, str]  # apiVersion, kind, name
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def _owner_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == crd.KIND and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _resource_version(obj: Mapping[str, Any]) -> int | None:
    value = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(value) if value.isdigit() else None


def _newer(incoming: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    """False when ``incoming`` is an older version than the cached one (a late watch event
    after the apply answer was cached). Resource versions are compared only when numeric."""
    if cached is None:
        return True
    new, old = _resource_version(incoming), _resource_version(cached)
    return new is None or old is None or new >= old


class _CrGone(Exception):
    """The custom resource a worker serves is no longer on the API server (404, or a new
    object under its name)."""


@dataclass
class ChildCache:
    """What the watches hold: children by owner uid, pods by (namespace, instance)."""

    children: dict[str, dict[Key, dict[str, Any]]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    # (owner uid, child key) -> resourceVersion of its deletion. An apply answered before a
    # deletion can reach the cache after the DELETED event (the reconcile caches its answers
    # when all children are applied); without this it would bring the deleted child back
    # into the cache, and the next reconcile would find it "unchanged" and never recreate it.
    deleted: dict[tuple[str, Key], int] = field(default_factory=dict)

    def put_child(self, obj: Mapping[str, Any], api_version: str, kind: str) -> str | None:
        """Cache ``obj`` under its owner; the owner's uid (None: not a CR's child)."""
        uid = _owner_uid(obj)
        if uid is None:
            return None
        body = dict(obj)
        body.setdefault("apiVersion", api_version)
        body.setdefault("kind", kind)
        key = (api_version, kind, body["metadata"]["name"])
        deleted_at = self.deleted.get((uid, key))
        if deleted_at is not None:
            version = _resource_version(body)
            if version is not None and version <= deleted_at:
                return uid  # the object as it was before it was deleted
            del self.deleted[(uid, key)]  # created again since
        owned = self.children.setdefault(uid, {})
        if _newer(body, owned.get(key)):
            owned[key] = body
        return uid

    def drop_child(self, obj: Mapping[str, Any], api_version: str, kind: str) -> str | None:
        uid = _owner_uid(obj)
        if uid is not None:
            key = (api_version, kind, obj["metadata"]["name"])
            self.children.get(uid, {}).pop(key, None)
            version = _resource_version(obj)
            if version is not None:
                self.deleted[(uid, key)] = version
        return uid

    def forget_owner(self, uid: str) -> None:
        self.children.pop(uid, None)
        for gone in [k for k in self.deleted if k[0] == uid]:
            del self.deleted[gone]

    def owned(self, uid: str) -> dict[Key, dict[str, Any]]:
        return dict(self.children.get(uid, {}))

    def find(self, namespace: str, kind: str, name: str) -> tuple[str, dict[str, Any]] | None:
        for uid, owned in self.children.items():
            for (_, child_kind, child_name), obj in owned.items():
                if (
                    child_kind == kind
                    and child_name == name
                    and obj["metadata"].get("namespace") == namespace
                ):
                    return uid, obj
        return None

    def instance_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(self.pods.get((namespace, name), {}).values())


@dataclass
class CrState:
    """The operator's memory of one CR (rebuilt from watches after a restart)."""

    body: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reconcile_due: bool = True
    reconciled_generation: int | None = None
    retry_at: float | None = None
    problems: list[Problem] = field(default_factory=list)
    # spec hash of each child as last applied: a child event with another hash is drift.
    rendered: dict[Key, str] = field(default_factory=dict)
    # ... and the field paths each sets: another writer touching one of them is drift too.
    rendered_paths: dict[Key, frozenset[tuple[str, ...]]] = field(default_factory=dict)
    # The status as last written (or as found on the CR): only changes are patched.
    status: dict[str, Any] = field(default_factory=dict)
    # StatefulSet name -> (reason, message, generation) from its FailedCreate Events.
    failures: dict[str, tuple[str, str, int | None]] = field(default_factory=dict)
    # Status values decided during a reconcile, written with the next status write.
    extra_status: dict[str, Any] = field(default_factory=dict)
    autoscaler: Autoscaler | None = None
    window: LatencyWindow | None = None
    last_decision_at: float = 0.0
    task: asyncio.Task[None] | None = None
    # (generation, its spec parsed and defaulted, or why the schema rejects it).
    parsed_spec: tuple[int | None, RecommenderSpec | InvalidSpec] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.body["metadata"]
        return meta

    @property
    def generation(self) -> int | None:
        value = self.meta.get("generation")
        return int(value) if value is not None else None

    def spec(self) -> RecommenderSpec | InvalidSpec:
        """The spec, parsed and defaulted once per generation (the spec changes only with a
        new ``metadata.generation``; without one, as on kmock's emulator, every time), or
        ``InvalidSpec`` naming each field the schema rejects (a CR that bypassed it)."""
        generation = self.generation
        if self.parsed_spec is None or generation is None or self.parsed_spec[0] != generation:
            try:
                parsed: RecommenderSpec | InvalidSpec = parse(self.body).spec
            except InvalidSpec as invalid:
                parsed = invalid
            self.parsed_spec = (generation, parsed)
        return self.parsed_spec[1]

    def valid_spec(self) -> RecommenderSpec | None:
        spec = self.spec()
        return None if isinstance(spec, InvalidSpec) else spec

    def references(self) -> tuple[set[str], set[str]]:
        """(Secret names, claim names) the spec names: their changes trigger a reconcile."""
        spec = self.valid_spec()
        if spec is None:  # only a new generation can fix it
            return set(), set()
        return spec.secret_names(), spec.claim_names()


class Controller:
    """Routes watch events to per-CR workers and runs their reconciles."""

    def __init__(
        self,
        config: OperatorConfig,
        client: Callable[[], KubeClient],
        metrics: OperatorMetrics,
    ) -> None:
        self.config = config
        self._client = client
        self.metrics = metrics
        self.cache = ChildCache()
        self.states: dict[str, CrState] = {}

    # --- watch events in ---------------------------------------------------------------------

    def on_cr(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.forget(uid)  # the API server's garbage collector removes the children
            return
        state = self.states.get(uid)
        if state is None:
            state = self.states[uid] = CrState(copy.deepcopy(dict(body)))
            state.status = copy.deepcopy(dict(body.get("status") or {}))
            state.task = asyncio.create_task(self._work(state), name=f"reconcile {uid}")
        else:
            state.body = copy.deepcopy(dict(body))
        if state.generation != state.reconciled_generation:
            state.reconcile_due = True
            state.wake.set()

    def on_child(
        self, event_type: str | None, body: Mapping[str, Any], api_version: str, kind: str
    ) -> None:
        if event_type == "DELETED":
            uid = self.cache.drop_child(body, api_version, kind)
            state = self.states.get(uid or "")
            if state is not None:
                state.reconcile_due = True  # someone deleted a child: render it again
                state.wake.set()
            return
        uid = self.cache.put_child(body, api_version, kind)
        state = self.states.get(uid or "")
        if state is None:
            return
        key = (api_version, kind, body["metadata"]["name"])
        rendered = state.rendered.get(key)
        annotations = body["metadata"].get("annotations") or {}
        if rendered is not None and (
            annotations.get(render.SPEC_HASH_ANNOTATION) != rendered
            or reconcile.edited_by_others(body, state.rendered_paths.get(key, frozenset()))
        ):
            state.reconcile_due = True  # edited away from its rendering
            state.wake.set()
        elif kind in WORKLOAD_KINDS:
            state.wake.set()  # its status may have moved

    def on_reference(self, event_type: str | None, body: Mapping[str, Any], kind: str) -> None:
        """A Secret or claim changed: reconcile the CRs that name it, at once."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        for state in self.states.values():
            if state.meta.get("namespace") != namespace:
                continue
            secrets, claims = state.references()
            if name in (secrets if kind == "Secret" else claims):
                log.info(
                    "reference changed",
                    extra={"cr": _cr_name(state), "kind": kind, "name": name, "event": event_type},
                )
                state.reconcile_due = True
                state.wake.set()

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        instance = (meta.get("labels") or {}).get("app.kubernetes.io/instance")
        if not instance:
            return
        pods = self.cache.pods.setdefault((str(meta.get("namespace")), str(instance)), {})
        before = _running(pods.get(meta["name"]))
        if event_type == "DELETED":
            pods.pop(meta["name"], None)
        else:
            pods[meta["name"]] = _pod_essentials(body)
        if before != _running(pods.get(meta["name"])):
            for state in self.states.values():  # ticking starts or stops with running pods
                if (state.meta.get("namespace"), state.meta.get("name")) == (
                    meta.get("namespace"),
                    instance,
                ):
                    state.wake.set()

    def on_failed_create(self, body: Mapping[str, Any]) -> None:
        """A FailedCreate Event about a StatefulSet: its controller cannot create a pod
        (Pod Security, quota). Deployments say so in their ReplicaFailure condition."""
        involved = body.get("involvedObject") or {}
        if involved.get("kind") != "StatefulSet":
            return
        found = self.cache.find(str(involved.get("namespace")), "StatefulSet", involved["name"])
        if found is None:
            return
        uid, statefulset = found
        state = self.states.get(uid)
        if state is None:
            return
        generation = statefulset["metadata"].get("generation")
        state.failures[involved["name"]] = (
            str(body.get("reason") or "FailedCreate"),
            str(body.get("message") or ""),
            int(generation) if generation is not None else None,
        )
        state.wake.set()

    def forget(self, uid: str) -> None:
        state = self.states.pop(uid, None)
        self.cache.forget_owner(uid)
        if state is not None:
            meta = state.meta
            self.metrics.degraded.labels(meta["namespace"], meta["name"]).set(0)
            if state.task is not None:
                state.task.cancel()

    async def stop(self) -> None:
        tasks = [s.task for s in self.states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.states.clear()

    # --- the worker --------------------------------------------------------------------------

    def _timeout(self, state: CrState) -> float | None:
        waits = []
        if state.retry_at is not None:
            waits.append(state.retry_at - time.monotonic())
        if self._ticking(state):
            waits.append(self.config.tick_seconds)
        return max(0.0, min(waits)) if waits else None

    def _ticking(self, state: CrState) -> bool:
        """Only a CR with running pods (or a Prometheus to ask) has anything to tick for."""
        if state.problems and state.reconciled_generation == state.generation:
            return False
        spec = state.valid_spec()
        if spec is None:
            return False
        if spec.autoscaling.prometheus_url:
            return True
        pods = self.cache.instance_pods(state.meta["namespace"], state.meta["name"])
        return any(_running(p) for p in pods)

    async def _work(self, state: CrState) -> None:
        while True:
            timeout = self._timeout(state)
            try:
                await asyncio.wait_for(state.wake.wait(), timeout)
                ticked = False
            except TimeoutError:
                ticked = True
            state.wake.clear()
            due = state.retry_at is not None and time.monotonic() >= state.retry_at
            needs_reconcile = (
                state.reconcile_due or due or state.generation != state.reconciled_generation
            )
            start, outcome = time.perf_counter(), "error"
            try:
                if needs_reconcile:
                    await self.reconcile(state)
                    outcome = "retry" if state.problems else "ok"
                else:
                    await self.refresh(state, tick=ticked and self._ticking(state))
                    outcome = "ok"
            except asyncio.CancelledError:
                raise
            except _CrGone:
                # Its DELETED event never came, or came before a stale event revived it (a
                # watch that re-lists reports nothing for what went in between): stop here.
                log.info("custom resource gone; forgetting it", extra={"cr": _cr_name(state)})
                self.forget(state.meta["uid"])
                return
            except Exception:
                log.exception("reconcile failed", extra={"cr": _cr_name(state)})
                state.reconcile_due = True
                state.retry_at = time.monotonic() + self.config.retry_seconds
            finally:
                handler = "reconcile" if needs_reconcile else "status"
                self.metrics.reconcile_seconds.labels(handler, outcome).observe(
                    time.perf_counter() - start
                )

    async def reconcile(self, state: CrState) -> None:
        """Apply the CR's current generation, then write its status for that generation."""
        meta = state.meta
        # One read before applying anything: children applied to a deleted owner would be
        # collected, and each removal would wake another reconcile.
        current = await self._client().get_or_none(
            crd.API_VERSION, crd.KIND, meta["namespace"], meta["name"]
        )
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            raise _CrGone
        state.reconcile_due = False
        generation = state.generation
        with tracer.start_as_current_span(
            "reconcile",
            attributes={"k8s.namespace": meta["namespace"], "k8s.name": meta["name"]},
        ):
            problems, retry = await self._converge(state)
        state.problems = problems
        state.reconciled_generation = generation
        state.retry_at = time.monotonic() + self.config.retry_seconds if retry else None
        await self.refresh(state)

    async def _converge(self, state: CrState) -> tuple[list[Problem], bool]:
        """(problems, whether a retry may help): what keeps the CR from its rendering."""
        body, meta, client = state.body, state.meta, self._client()
        spec = state.spec()
        if isinstance(spec, InvalidSpec):  # only a new generation can fix it
            return [Problem("InvalidSpec", str(spec))], False
        references = await reconcile.check_references(client, meta["namespace"], spec)
        if references.problems:  # their watches wake us when they appear
            return references.problems, True
        owned = self.cache.owned(meta["uid"])
        manifests = render.render(
            body,
            render.Desired(
                self.config.service_image,
                ranking_replicas=self._ranking_replicas(state, spec.autoscaling, owned),
                operator_namespace=self.config.pod_namespace or None,
            ),
            spec=spec,
        )
        try:
            await ensure_triton_admin_secret(client, body)
        except reconcile.KubeError as exc:
            return [Problem("TritonKeyUnavailable", f"Secret for Triton's admin key: {exc}")], True
        result = await reconcile.apply_children(client, body, manifests, owned)
        for obj in result.live:
            if obj.get("metadata"):
                self.cache.put_child(obj, obj["apiVersion"], obj["kind"])
        for pruned in result.pruned:
            kind, name = pruned.split("/", 1)
            for key in [k for k in self.cache.owned(meta["uid"]) if k[1:] == (kind, name)]:
                self.cache.children.get(meta["uid"], {}).pop(key, None)
        not_applied = {c.child for c in result.failed} | set(result.foreign)
        kept = [m for m in manifests if f"{m['kind']}/{m['metadata']['name']}" not in not_applied]
        state.rendered = {
            render.child_key(m): str(m["metadata"]["annotations"][render.SPEC_HASH_ANNOTATION])
            for m in kept
        }
        state.rendered_paths = {render.child_key(m): reconcile.manifest_paths(m) for m in kept}
        for label in result.applied:
            self.metrics.children_applied.labels(label.split("/")[0]).inc()
        # A reconcile that wrote nothing (a resume, a repeated event) is routine: DEBUG.
        log.log(
            logging.INFO if result.applied or result.pruned else logging.DEBUG,
            "reconciled",
            extra={
                "cr": _cr_name(state),
                "generation": state.generation,
                "applied": result.applied,
                "unchanged": len(result.unchanged),
                "pruned": result.pruned,
                "foreign": result.foreign,
                "failed": [f.child for f in result.failed],
            },
        )
        problems = result.problems(meta["namespace"])
        if self.config.ensure_topics:
            try:
                await reconcile.ensure_kafka_topics(
                    spec.kafka.bootstrap_servers,
                    meta["name"],
                    spec.kafka.partitions,
                    self.config.kafka_timeout_seconds,
                    references.kafka_credentials,
                )
            except Exception as exc:
                problems.append(
                    Problem(
                        "KafkaUnavailable",
                        f"spec.kafka.bootstrapServers: could not ensure topics "
                        f"{reconcile.topics_for(meta['name'])}: {exc}",
                    )
                )
        return problems, bool(problems)

    def _ranking_replicas(
        self, state: CrState, autoscaling: Autoscaling, owned: Mapping[Key, Mapping[str, Any]]
    ) -> int | None:
        """The ranking replicas the operator engine starts from: its last decision, else the
        live count when an HPA held the field (switching back from hpa keeps the pods)."""
        desired = state.status.get("desiredReplicas")
        live = owned.get(("apps/v1", "Deployment", f"{state.meta['name']}-ranking"))
        if (
            live is not None
            and (live.get("spec") or {}).get("replicas") is not None
            and live["metadata"].get("managedFields")
            and not reconcile.owns_field(live, FIELD_MANAGER, "spec", "replicas")
        ):
            low, high = autoscaling.min_replicas, autoscaling.max_replicas
            carried = min(max(int(live["spec"]["replicas"]), low), high)
            state.extra_status["desiredReplicas"] = carried  # later reconciles keep it
            return carried
        return None if desired is None else int(desired)

    # --- status ------------------------------------------------------------------------------

    def _clear_stale_failures(self, state: CrState, owned: Mapping[Key, Mapping[str, Any]]) -> None:
        for name, (_, _, generation) in list(state.failures.items()):
            live = owned.get(("apps/v1", "StatefulSet", name))
            if live is None:
                del state.failures[name]
                continue
            created = int((live.get("status") or {}).get("replicas") or 0)
            desired = int((live.get("spec") or {}).get("replicas") or 1)
            if created >= desired or live["metadata"].get("generation") != generation:
                del state.failures[name]

    async def refresh(self, state: CrState, *, tick: bool = False) -> None:
        """Status from what the watches hold (no API reads); written only where it changed."""
        meta, client = state.meta, self._client()
        owned = self.cache.owned(meta["uid"])
        self._clear_stale_failures(state, owned)
        observation = await reconcile.observe(
            client,
            state.body,
            list(owned.values()),
            pods=self.cache.instance_pods(meta["namespace"], meta["name"]),
            failures={name: f[:2] for name, f in state.failures.items()},
        )
        current = conditions(observation.workloads, state.problems)
        values: dict[str, Any] = {
            "observedGeneration": state.reconciled_generation,
            "conditions": merge_conditions(
                state.status.get("conditions"), current, generation=state.reconciled_generation
            ),
            "selector": ",".join(
                f"{k}={v}" for k, v in render.selector_labels(meta["name"], "ranking").items()
            ),
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
        values.update(state.extra_status)
        state.extra_status.clear()
        if tick and not state.problems:
            values.update(await self._autoscale(state, observation))
        await self._write_status(state, values)

    async def _write_status(self, state: CrState, values: Mapping[str, Any]) -> None:
        changed = {k: v for k, v in values.items() if state.status.get(k) != v}
        if not changed:
            return
        meta = state.meta
        before = _condition(state.status, "Degraded")
        try:
            await self._client().merge_patch(
                crd.API_VERSION,
                crd.KIND,
                meta["namespace"],
                meta["name"],
                {"status": changed},
                subresource="status",
            )
        except NotFound:
            raise _CrGone from None
        state.status.update(copy.deepcopy(changed))
        after = _condition(state.status, "Degraded")
        degraded = after is not None and after.get("status") == "True"
        self.metrics.degraded.labels(meta["namespace"], meta["name"]).set(1 if degraded else 0)
        await self._post_degraded_transition(state, before, after)

    async def post_event(
        self, cr: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A Kubernetes Event about ``cr`` (``kubectl describe recdep`` shows it)."""
        try:
            await self._client().create(event_manifest(cr, type_, reason, message))
        except Exception as exc:  # an Event is worth a log line, never a failed reconcile
            log.warning("could not post an Event", extra={"reason": reason, "error": str(exc)})

    async def _post_degraded_transition(
        self, state: CrState, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        """An Event and a log line when Degraded turns on, changes its reason, or clears."""
        if after is None:
            return
        was = before is not None and before.get("status") == "True"
        now = after.get("status") == "True"
        if now and (not was or (before or {}).get("reason") != after.get("reason")):
            log.warning(
                "degraded: %s: %s",
                after["reason"],
                after["message"],
                extra={"cr": _cr_name(state), "reason": after["reason"]},
            )
            await self.post_event(
                state.body, "Warning", str(after["reason"]), str(after["message"])
            )
        elif was and not now:
            log.info(
                "recovered", extra={"cr": _cr_name(state), "was": (before or {}).get("reason")}
            )
            await self.post_event(
                state.body,
                "Normal",
                "Recovered",
                f"no longer degraded (was {(before or {}).get('reason')})",
            )

    # --- the latency autoscaler (operator engine) --------------------------------------------

    async def _autoscale(self, state: CrState, observation: Observation) -> dict[str, Any]:
        spec = state.valid_spec()
        if spec is None:  # a new, invalid generation arrived: its reconcile reports it
            return {}
        autoscaling = spec.autoscaling
        meta = state.meta
        autoscaler = self._autoscaler(state, autoscaling)
        values: dict[str, Any] = {}
        p95 = await self._latency_p95(state, autoscaling, observation)
        if p95 is not None:
            values["latencyP95Ms"] = round(p95, 2)
            self.metrics.ranking_p95_ms.labels(meta["namespace"], meta["name"]).set(p95)
        operator_engine = autoscaling.operator_scales
        period_due = time.monotonic() - state.last_decision_at >= autoscaler.policy.period_s
        if not (operator_engine and observation.replicas is not None and period_due):
            return values
        state.last_decision_at = time.monotonic()
        decision = autoscaler.decide(observation.replicas, p95, time.monotonic())
        log.debug(
            "autoscaler decision: %s -> %s (%s)",
            decision.current,
            decision.replicas,
            decision.reason,
            extra={
                "cr": _cr_name(state),
                "current": decision.current,
                "replicas": decision.replicas,
                "p95_ms": p95,
                "reason": decision.reason,
            },
        )
        if not decision.changed:
            return values
        manifests = render.render(
            state.body,
            render.Desired(
                self.config.service_image,
                ranking_replicas=decision.replicas,
                operator_namespace=self.config.pod_namespace or None,
            ),
            spec=spec,
        )
        name = f"{meta['name']}-ranking"
        for manifest in manifests:
            if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] == name:
                written = await self._client().apply(manifest)
                written.setdefault("apiVersion", "apps/v1")
                written.setdefault("kind", "Deployment")
                self.cache.put_child(written, "apps/v1", "Deployment")
                state.rendered[render.child_key(manifest)] = str(
                    manifest["metadata"]["annotations"][render.SPEC_HASH_ANNOTATION]
                )
        self.metrics.scale_decisions.labels(decision.direction).inc()
        message = f"ranking {decision.current} -> {decision.replicas}: {decision.reason}"
        await self.post_event(
            state.body,
            "Normal",
            "ScaledUp" if decision.direction == "up" else "ScaledDown",
            message,
        )
        values.update(
            desiredReplicas=decision.replicas, replicas=decision.replicas, lastScaleTime=now_iso()
        )
        return values

    def _autoscaler(self, state: CrState, autoscaling: Autoscaling) -> Autoscaler:
        policy = Policy.from_spec(autoscaling)
        if state.autoscaler is None:
            state.autoscaler = Autoscaler(policy)
        else:
            state.autoscaler.reconfigure(policy)
        window = float(autoscaling.window_seconds)
        if state.window is None or state.window.window_s != window:
            state.window = LatencyWindow(window)
        return state.autoscaler

    async def _latency_p95(
        self,
        state: CrState,
        autoscaling: Autoscaling,
        observation: Observation,
    ) -> float | None:
        client, meta = self._client(), state.meta
        if autoscaling.prometheus_url:
            query = render.latency_query(
                meta["name"], meta["namespace"], autoscaling.window_seconds
            )
            try:
                return await reconcile.prometheus_p95_ms(client, autoscaling.prometheus_url, query)
            except Exception as exc:
                log.warning("prometheus query failed", extra={"error": str(exc)})
                return None
        pods = await reconcile.scrape_ranking_latency(
            client, meta["namespace"], meta["name"], observation.pods
        )
        assert state.window is not None
        state.window.add(time.monotonic(), pods)
        return state.window.p95_ms()


def event_manifest(cr: Mapping[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about ``cr``, named as client-go names them (object.unique-suffix)."""
    meta = cr["metadata"]
    stamp = now_iso()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _pod_essentials(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What scraping needs of a pod (the watch sees every pod with an instance label, not
    only ours: keep memory per pod small)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
        },
        "spec": {
            "containers": [
                {"name": c.get("name"), "ports": list(c.get("ports") or [])} for c in containers
            ]
        },
        "status": {"phase": status.get("phase"), "podIP": status.get("podIP")},
    }


def _running(pod: Mapping[str, Any] | None) -> bool:
    status = (pod or {}).get("status") or {}
    return bool(status.get("phase") == "Running" and status.get("podIP"))


def _condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def _cr_name(state: CrState) -> str:
    return f"{state.meta.get('namespace')}/{state.meta.get('name')}"
