"""Status (pure): children's readiness and known problems -> conditions that name the part.

``Ready`` is True when every workload has all its replicas ready; ``Progressing`` while a
rollout or scale is under way; ``Degraded`` when something the operator found (a bad spec, a
missing Secret, Kafka unreachable, an apply refused) or a child's controller reports (pods it
cannot create: ``ReplicaFailure``/``FailedCreate``, a rollout past its deadline) keeps it from
converging. Reasons are CamelCase and name the part (``RankingNotReady``, ``KafkaUnavailable``,
``TrainerFailedCreate``); messages name fields or the child.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Problem",
    "WorkloadState",
    "conditions",
    "merge_conditions",
    "now_iso",
    "workload_failure",
    "workload_problems",
    "workload_state",
]

WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@dataclass(frozen=True)
class Problem:
    """Something that keeps the deployment from converging."""

    reason: str  # CamelCase, names the part: SecretNotFound, KafkaUnavailable, InvalidSpec
    message: str  # names the field: "spec.kafka.credentialsSecret.name: Secret 'x' not found"


@dataclass(frozen=True)
class WorkloadState:
    component: str  # feature, trainer, triton, ranking
    desired: int
    ready: int
    updated: int
    rolled_out: bool  # the controller has seen the latest spec
    kind: str = "Deployment"
    name: str = ""
    # What the workload's controller reports as failing (reason, message), e.g. pods it
    # cannot create (Pod Security, quota): the CR is Degraded, not just "0/1 ready".
    failure: tuple[str, str] | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready >= self.desired and self.rolled_out

    @property
    def progressing(self) -> bool:
        return not self.rolled_out or self.updated < self.desired or self.ready < self.desired


def workload_failure(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The failure a Deployment's conditions report: ``ReplicaFailure`` (copied from its
    ReplicaSet: FailedCreate and the admission's message) or a rollout past its deadline."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        kind, status = condition.get("type"), condition.get("status")
        if kind == "ReplicaFailure" and status == "True":
            return str(condition.get("reason") or "ReplicaFailure"), str(
                condition.get("message") or ""
            )
        if (
            kind == "Progressing"
            and status == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return "ProgressDeadlineExceeded", str(condition.get("message") or "")
    return None


def workload_state(obj: Mapping[str, Any], failure: tuple[str, str] | None = None) -> WorkloadState:
    """A Deployment's or StatefulSet's readiness from its spec and status.

    ``failure``: what the controller reported elsewhere (a StatefulSet has no such
    conditions; its FailedCreate is an Event), else read from the object's conditions.
    """
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    return WorkloadState(
        component=str(labels.get("app.kubernetes.io/component", meta.get("name", "?"))),
        desired=desired,
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        rolled_out=generation is None or observed is None or observed >= generation,
        kind=str(obj.get("kind") or "Deployment"),
        name=str(meta.get("name", "")),
        failure=failure or workload_failure(obj),
    )


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def _camel(component: str) -> str:
    return component[:1].upper() + component[1:]


def workload_problems(workloads: Sequence[WorkloadState]) -> list[Problem]:
    """Each failing workload as a problem whose reason names the component."""
    return [
        Problem(f"{_camel(w.component)}{w.failure[0]}", f"{w.kind}/{w.name}: {w.failure[1]}")
        for w in workloads
        if w.failure is not None
    ]


def conditions(
    workloads: Sequence[WorkloadState], problems: Sequence[Problem]
) -> list[dict[str, Any]]:
    """Ready, Progressing and Degraded for the current observation (no timestamps)."""
    problems = [*problems, *workload_problems(workloads)]
    not_ready = [w for w in workloads if not w.is_ready]
    if problems:
        ready = _condition("Ready", False, problems[0].reason, problems[0].message)
    elif not workloads:
        ready = _condition("Ready", False, "NoWorkloads", "no workloads observed yet")
    elif not_ready:
        first = not_ready[0]
        message = "; ".join(f"{w.component}: {w.ready}/{w.desired} ready" for w in not_ready)
        ready = _condition("Ready", False, f"{_camel(first.component)}NotReady", message)
    else:
        ready = _condition("Ready", True, "AllReady", "all components ready")
    moving = [w for w in workloads if w.progressing]
    progressing = _condition(
        "Progressing",
        bool(moving),
        f"{_camel(moving[0].component)}RollingOut" if moving else "Stable",
        "; ".join(f"{w.component}: {w.updated}/{w.desired} updated" for w in moving)
        or "nothing rolling out",
    )
    degraded = _condition(
        "Degraded",
        bool(problems),
        problems[0].reason if problems else "AsExpected",
        "; ".join(p.message for p in problems) or "no problems",
    )
    return [ready, progressing, degraded]


def merge_conditions(
    previous: Iterable[Mapping[str, Any]] | None,
    current: Iterable[Mapping[str, Any]],
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """``current`` with lastTransitionTime kept from ``previous`` where the status is unchanged."""
    before = {c.get("type"): c for c in previous or []}
    stamp = now or now_iso()
    merged = []
    for condition in current:
        old = before.get(condition["type"])
        unchanged = old is not None and old.get("status") == condition["status"]
        out = dict(condition)
        out["lastTransitionTime"] = (
            old.get("lastTransitionTime", stamp) if unchanged and old is not None else stamp
        )
        if generation is not None:
            out["observedGeneration"] = generation
        merged.append(out)
    return merged
