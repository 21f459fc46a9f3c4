"""Pod Security "restricted" decided by the real API server (envtest): every pod the operator
renders is admitted in a namespace that enforces it, and so are the pods the controllers make."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_crs import EXAMPLES
from envtest import delete_namespace, eventually, new_namespace, running_operator

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import render
from freshrank_operator.kube import KubeClient, KubeError

pytestmark = pytest.mark.integration
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture
async def restricted_namespace(kube: KubeClient, recdep_crd: dict[str, Any]) -> AsyncIterator[str]:
    name = await new_namespace(kube, RESTRICTED)
    yield name
    await delete_namespace(kube, name)


def _cr(path: Path, namespace: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    document["metadata"]["namespace"] = namespace
    document["metadata"]["uid"] = "0b7c7d4e-1111-4a4a-8e8e-123456789abc"
    return document


def _as_pod(workload: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The Pod its controller would create (a StatefulSet adds its claim templates' volumes)."""
    name = workload["metadata"]["name"]
    template = workload["spec"]["template"]
    spec = dict(template["spec"])
    claims = workload["spec"].get("volumeClaimTemplates") or []
    spec["volumes"] = [
        *spec.get("volumes", []),
        *(
            {
                "name": claim["metadata"]["name"],
                "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-{name}-0"},
            }
            for claim in claims
        ),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": name, "namespace": namespace},
        "spec": spec,
    }


async def _dry_run_create(client: KubeClient, pod: dict[str, Any]) -> dict[str, Any]:
    return await client.create(pod, dry_run=True)


async def test_the_namespace_enforces_restricted(
    kube: KubeClient, restricted_namespace: str
) -> None:
    """The control: what every pod looked like before (no seccomp profile) is refused."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": restricted_namespace},
        "spec": {"containers": [{"name": "c", "image": "nvcr.io/nvidia/tritonserver:24.08-py3"}]},
    }
    with pytest.raises(KubeError) as refused:
        await _dry_run_create(kube, pod)
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in refused.value.message
    assert "seccompProfile" in refused.value.message


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_every_rendered_pod_is_admitted_under_restricted(
    kube: KubeClient, restricted_namespace: str, path: Path
) -> None:
    manifests = render.render(_cr(path, restricted_namespace))
    workloads = [m for m in manifests if m["kind"] in {"Deployment", "StatefulSet"}]
    assert len(workloads) == 4
    for workload in workloads:
        pod = _as_pod(workload, restricted_namespace)
        created = await _dry_run_create(kube, pod)  # a refusal raises 403, naming the field
        assert created["metadata"]["name"] == pod["metadata"]["name"]


async def test_the_controllers_create_every_pod_in_a_restricted_namespace(
    kube_cluster: EmbeddedKubernetes, kube: KubeClient, restricted_namespace: str
) -> None:
    """The operator applies the children; the Deployment/StatefulSet controllers make the
    Pods, which Pod Security admits (no FailedCreate): one Pod per component appears."""
    cr = {
        "apiVersion": "freshrank.io/v1alpha1",
        "kind": "RecommenderDeployment",
        "metadata": {"name": "shop", "namespace": restricted_namespace},
        "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9"}},
    }
    async with running_operator(kube_cluster, restricted_namespace):
        await kube.create(cr)

        async def components() -> set[str]:
            pods = await kube.list(
                "v1", "Pod", restricted_namespace, labels={"app.kubernetes.io/instance": "shop"}
            )
            return {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods}

        async def all_components() -> bool:
            return await components() == {"feature", "trainer", "triton", "ranking"}

        await eventually(all_components, timeout=90)
    events = await kube.list("v1", "Event", restricted_namespace)
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    assert not failed, [e["message"] for e in failed]
