"""The Helm chart on the real API server (envtest): rendered by helm, applied with kubectl into
namespaces that enforce Pod Security "restricted"; the operator pod is admitted, and the
operator, logged in as the chart's ServiceAccount with only the chart's RBAC, leads through
its Lease and reconciles a CR in a watched namespace."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envtest import (
    ClusterApi,
    cluster_config,
    delete_namespace,
    eventually,
    example_cr,
    kubeconfig_for,
    new_namespace,
    service_account_token,
)

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import render
from freshrank_operator.kube import KubeClient
from freshrank_operator.leader import LEASE_API_VERSION
from freshrank_operator.testing import operator_thread

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "freshrank"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm as `make helm` built it (charts/helm.sh), or $FRESHRANK_HELM."""
    located = subprocess.run(
        [str(REPO / "charts" / "helm.sh"), "--locate"], capture_output=True, text=True
    )
    if located.returncode != 0:
        pytest.fail(located.stderr.strip(), pytrace=False)
    return Path(located.stdout.strip())


@pytest.fixture
async def restricted_namespaces(
    kube: KubeClient, recdep_crd: dict[str, Any]
) -> AsyncIterator[tuple[str, str]]:
    """(release namespace, watched namespace), both enforcing restricted."""
    names = (await new_namespace(kube, RESTRICTED), await new_namespace(kube, RESTRICTED))
    yield names
    for name in names:
        await delete_namespace(kube, name)


def _template(helm: Path, release: str, namespace: str, *values: str) -> str:
    done = subprocess.run(
        [
            str(helm),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            "1.30.0",
            *(arg for value in values for arg in ("--set", value)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def test_the_chart_installs_and_its_operator_works_with_only_its_rbac(
    helm: Path,
    kube_cluster: EmbeddedKubernetes,
    kube: KubeClient,
    restricted_namespaces: tuple[str, str],
    tmp_path: Path,
) -> None:
    release_ns, watched = restricted_namespaces
    release = f"fr{uuid.uuid4().hex[:6]}"
    manifests = _template(helm, release, release_ns, f"watchNamespaces={{{watched}}}")
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    assert {d["kind"] for d in documents} >= {"Deployment", "Role", "ClusterRole"}
    kube_cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifests)

    # The controllers create the operator's Pod in the restricted namespace: admitted.
    async def operator_pods() -> list[dict[str, Any]]:
        return await kube.list(
            "v1", "Pod", release_ns, labels={"app.kubernetes.io/component": "operator"}
        )

    await eventually(operator_pods, timeout=90)
    events = await kube.list("v1", "Event", release_ns)
    assert not [e["message"] for e in events if e.get("reason") == "FailedCreate"]

    # The operator as the chart's ServiceAccount (the Pod cannot run here: no kubelet).
    account = f"{release}-operator"
    token = await service_account_token(kube, release_ns, account, create=False)
    kubeconfig = kubeconfig_for(kube_cluster, token, tmp_path / "operator.kubeconfig")
    config = cluster_config(
        kube_cluster,
        watched,
        kubeconfig=str(kubeconfig),
        leader_election=True,
        pod_namespace=release_ns,
        pod_name="replica-under-test",
        lease_name=account,
    )
    apps = ClusterApi(kube, watched)
    async with operator_thread(config):
        await apps.create_cr(example_cr("shop", watched))

        async def applied() -> bool:
            expected = await apps.expected_children("shop")
            return expected <= set(await apps.children("shop"))

        await eventually(applied, timeout=60)
        assert await apps.get("v1", "Secret", render.triton_admin_secret_name("shop"))
        degraded = await eventually(lambda: apps.condition("shop", "Degraded"))
        assert degraded["status"] == "False", degraded
        lease = await kube.get_or_none(LEASE_API_VERSION, "Lease", release_ns, account)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "replica-under-test"
