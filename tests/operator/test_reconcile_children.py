"""apply_children's decisions, checked against a recording client (pure unit checks).

What the API server answers is scripted here; that real servers answer so (a missing CRD's
bare 404, server-side apply releasing a field) is checked on envtest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2

from freshrank_operator import reconcile, render
from freshrank_operator.kube import (
    FIELD_MANAGER,
    Conflict,
    KubeError,
    NotFound,
    ResourceTypeMissing,
    _error,
)
from freshrank_operator.status import WorkloadState, conditions, workload_state

NS = "shop-ns"


def _cr(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "freshrank.io/v1alpha1",
        "kind": "RecommenderDeployment",
        "metadata": {"name": "shop", "namespace": NS, "uid": "uid-1", "generation": 1},
        "spec": {"kafka": {"bootstrapServers": "k:9092"}, **spec},
    }


class RecordingClient:
    """Answers GETs from ``objects`` and applies by storing; ``fail`` scripts errors by kind."""

    def __init__(
        self,
        objects: Mapping[tuple[str, str], dict[str, Any]] | None = None,
        fail: Mapping[str, KubeError] | None = None,
    ) -> None:
        self.objects = dict(objects or {})
        self.fail = dict(fail or {})
        self.applied: list[tuple[str | None, dict[str, Any]]] = []

    async def get_or_none(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        if kind in self.fail and isinstance(self.fail[kind], ResourceTypeMissing):
            raise self.fail[kind]
        return self.objects.get((kind, name))

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        if manifest["kind"] in self.fail:
            raise self.fail[manifest["kind"]]
        self.applied.append((field_manager, dict(manifest)))
        return dict(manifest)

    async def delete(self, *_: Any) -> bool:
        return True


def _answer(status: int, **body: Any) -> httpx2.HTTPStatusError:
    request = httpx2.Request("GET", "https://api/apis/keda.sh/v1alpha1/scaledobjects")
    response = httpx2.Response(status, request=request, **body)
    return httpx2.HTTPStatusError("refused", request=request, response=response)


def test_a_404_without_a_status_body_means_the_kind_is_not_served() -> None:
    assert isinstance(_error(_answer(404, text="404 page not found\n")), ResourceTypeMissing)
    missing = _error(
        _answer(404, json={"kind": "Status", "reason": "NotFound", "message": "x not found"})
    )
    assert isinstance(missing, NotFound)
    assert not isinstance(missing, ResourceTypeMissing)
    assert str(missing) == "404 NotFound: x not found"
    conflict = _error(_answer(409, json={"kind": "Status", "reason": "AlreadyExists"}))
    assert isinstance(conflict, Conflict)


async def test_every_failing_child_is_listed_with_its_cr_field() -> None:
    cr = _cr(autoscaling={"engine": "keda", "prometheusUrl": "http://prom:9090"})
    client = RecordingClient(
        fail={
            "ScaledObject": ResourceTypeMissing(404, "NotFound", "404 page not found"),
            "StatefulSet": KubeError(422, "Invalid", "spec: Forbidden: updates to statefulset"),
        }
    )
    result = await reconcile.apply_children(client, cr, render.render(cr), {})  # type: ignore[arg-type]
    problems = result.problems(NS)
    assert [p.reason for p in problems] == ["ChildApplyFailed", "ChildApplyFailed"]
    trainer, keda = (p.message for p in problems)
    assert trainer.startswith("StatefulSet/shop-trainer (spec.trainer): 422 Invalid")
    assert keda.startswith("ScaledObject/shop-ranking (spec.autoscaling.engine): ")
    assert "scaledobjects.keda.sh is missing (KEDA is not installed)" in keda
    assert "404 page not found" not in keda
    # The other children were still applied.
    assert "Deployment/shop-ranking" in result.applied


async def test_an_existing_object_not_owned_is_never_applied_over() -> None:
    cr = _cr()
    theirs = {"metadata": {"name": "shop-config", "namespace": NS}, "data": {"a": "b"}}
    client = RecordingClient({("ConfigMap", "shop-config"): theirs})
    result = await reconcile.apply_children(client, cr, render.render(cr), {})  # type: ignore[arg-type]
    assert result.foreign == ["ConfigMap/shop-config"]
    assert all(m["metadata"]["name"] != "shop-config" for _, m in client.applied)
    [problem] = result.problems(NS)
    assert problem.reason == "ChildNotOwned"
    assert problem.message.startswith("ConfigMap/shop-config: ")


def _owned_by_us(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "shop-ranking",
            "namespace": NS,
            "ownerReferences": [{"uid": "uid-1"}],
            "annotations": {render.SPEC_HASH_ANNOTATION: "old"},
            "managedFields": [
                {
                    "manager": FIELD_MANAGER,
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
                }
            ],
        },
        "spec": {"replicas": replicas},
    }


async def test_switching_to_hpa_hands_the_replicas_over_before_releasing_them() -> None:
    cr = _cr(autoscaling={"engine": "hpa"})
    manifests = [m for m in render.render(cr) if m["metadata"]["name"] == "shop-ranking"]
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA's field from now on
    live = {("apps/v1", "Deployment", "shop-ranking"): _owned_by_us(4)}
    client = RecordingClient()
    await reconcile.apply_children(client, cr, [deployment], live)  # type: ignore[arg-type]
    (manager, handover), (main_manager, main) = client.applied
    assert manager == reconcile.HANDOVER_MANAGER
    assert handover["spec"] == {"replicas": 4}
    assert main_manager is None  # then the operator's own apply, without replicas
    assert "replicas" not in main["spec"]


async def test_no_handover_once_the_operator_no_longer_owns_replicas() -> None:
    cr = _cr(autoscaling={"engine": "hpa"})
    deployment = next(
        m
        for m in render.render(cr)
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "shop-ranking"
    )
    live = _owned_by_us(4)
    live["metadata"]["managedFields"][0]["fieldsV1"] = {"f:spec": {"f:template": {}}}
    client = RecordingClient()
    await reconcile.apply_children(
        client,  # type: ignore[arg-type]
        cr,
        [deployment],
        {("apps/v1", "Deployment", "shop-ranking"): live},
    )
    assert [manager for manager, _ in client.applied] == [None]


def test_a_deployment_replica_failure_names_the_component() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "shop-ranking", "labels": {"app.kubernetes.io/component": "ranking"}},
        "spec": {"replicas": 1},
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": "forbidden: violates PodSecurity",
                }
            ]
        },
    }
    state = workload_state(deployment)
    assert state.failure == ("FailedCreate", "forbidden: violates PodSecurity")
    degraded = conditions([state], [])[2]
    assert degraded["status"] == "True"
    assert degraded["reason"] == "RankingFailedCreate"
    assert degraded["message"] == "Deployment/shop-ranking: forbidden: violates PodSecurity"


def test_a_healthy_workload_is_not_degraded() -> None:
    ok = WorkloadState("ranking", desired=1, ready=0, updated=0, rolled_out=True)
    assert conditions([ok], [])[2]["status"] == "False"


def _managed(*entries: tuple[str, str, dict[str, Any], str | None]) -> dict[str, Any]:
    return {
        "metadata": {
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Apply" if manager == FIELD_MANAGER else "Update",
                    "time": time,
                    "fieldsV1": fields,
                    **({"subresource": sub} if sub else {}),
                }
                for manager, time, fields, sub in entries
            ]
        }
    }


RENDERED = reconcile.manifest_paths(
    {
        "metadata": {"annotations": {render.SPEC_HASH_ANNOTATION: "h"}},
        "data": {"FRESHRANK_NAME": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "ranking"}]}}},
    }
)
OURS = (FIELD_MANAGER, "2026-01-01T00:00:10Z", {"f:data": {"f:FRESHRANK_NAME": {}}}, None)


def test_an_edit_of_a_rendered_field_is_drift() -> None:
    edited = ("kubectl-edit", "2026-01-01T00:00:20Z", {"f:data": {"f:FRESHRANK_NAME": {}}}, None)
    assert reconcile.edited_by_others(_managed(OURS, edited), RENDERED)
    container = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"x"}': {}}}}}}
    env_edit = ("kubectl-edit", "2026-01-01T00:00:20Z", container, None)
    assert reconcile.edited_by_others(_managed(OURS, env_edit), RENDERED)


def test_controllers_writing_their_own_fields_are_not_drift() -> None:
    revision = {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}
    controller = ("kube-controller-manager", "2026-01-01T00:00:20Z", revision, None)
    status = ("kube-controller-manager", "2026-01-01T00:00:20Z", {"f:data": {}}, "status")
    older = ("kubectl-edit", "2026-01-01T00:00:05Z", {"f:data": {"f:FRESHRANK_NAME": {}}}, None)
    for other in (controller, status, older):
        assert not reconcile.edited_by_others(_managed(OURS, other), RENDERED)
