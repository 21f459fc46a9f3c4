"""Security in the cluster, on the real API server (envtest): each CR's NetworkPolicy and Triton
admin-key Secret are applied, owned and collected with it; the operator works with the chart's
namespaced RBAC alone, and that RBAC reads no Secret outside its namespaces."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from envtest import (
    ClusterApi,
    delete_namespace,
    eventually,
    example_cr,
    grant_chart_rbac,
    kubeconfig_for,
    new_namespace,
    running_operator,
    service_account_token,
)

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import render
from freshrank_operator.kube import KubeClient

pytestmark = pytest.mark.integration


def _controller_uid(obj: dict[str, Any]) -> str:
    (owner,) = [r for r in obj["metadata"]["ownerReferences"] if r.get("controller")]
    return str(owner["uid"])


async def test_network_policy_and_admin_key_are_owned_and_collected_with_the_cr(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    async with running_operator(kube_cluster, cluster_api.namespace):
        cr = await cluster_api.create_cr(example_cr("shop", cluster_api.namespace))
        uid = cr["metadata"]["uid"]
        policy = await eventually(
            lambda: cluster_api.get("networking.k8s.io/v1", "NetworkPolicy", "shop-network")
        )
        secret = await eventually(
            lambda: cluster_api.get("v1", "Secret", render.triton_admin_secret_name("shop"))
        )
        assert _controller_uid(policy) == _controller_uid(secret) == uid
        # What the API server stored is what was rendered (nothing dropped or rejected).
        rendered = {m["kind"]: m for m in render.render(cr)}["NetworkPolicy"]
        assert policy["spec"]["ingress"] == rendered["spec"]["ingress"]
        key = base64.b64decode(secret["data"][render.TRITON_ADMIN_SECRET_KEY])
        assert len(key) >= 40
        await cluster_api.delete_cr("shop")
        # Garbage collection (kube-controller-manager) follows the ownerReferences.

        async def gone() -> bool:
            policy = await cluster_api.get("networking.k8s.io/v1", "NetworkPolicy", "shop-network")
            secret = await cluster_api.get("v1", "Secret", render.triton_admin_secret_name("shop"))
            return policy is None and secret is None

        await eventually(gone, timeout=60)


@pytest.fixture
async def other_namespace(kube: KubeClient, recdep_crd: dict[str, Any]) -> AsyncIterator[str]:
    name = await new_namespace(kube)
    yield name
    await delete_namespace(kube, name)


async def _service_account_kubeconfig(
    kube: KubeClient, kube_cluster: EmbeddedKubernetes, namespace: str, path: Path
) -> str:
    """A ServiceAccount bound to the chart's rules as the chart binds them with
    ``watchNamespaces: [namespace]``: its ClusterRole (cluster reads only) and a Role in the
    watched namespace. Returns the account's name; ``path`` gets a kubeconfig with its token."""
    name = "freshrank-operator"
    token = await service_account_token(kube, namespace, name)
    await grant_chart_rbac(kube, namespace, name)
    kubeconfig_for(kube_cluster, token, path)
    return f"system:serviceaccount:{namespace}:{name}"


async def _can(kube: KubeClient, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = await kube.create(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace},
            },
        }
    )
    return bool(review["status"].get("allowed"))


async def test_the_operator_needs_only_the_charts_namespaced_rbac(
    kube_cluster: EmbeddedKubernetes,
    kube: KubeClient,
    cluster_api: ClusterApi,
    other_namespace: str,
    tmp_path: Path,
) -> None:
    namespace = cluster_api.namespace
    kubeconfig = tmp_path / "operator.kubeconfig"
    user = await _service_account_kubeconfig(kube, kube_cluster, namespace, kubeconfig)
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "creds"}}}
    await cluster_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"username": "u", "password": "p"},
        }
    )
    async with running_operator(kube_cluster, namespace, kubeconfig=str(kubeconfig)):
        await cluster_api.create_cr(example_cr("shop", namespace, **spec))

        async def all_applied() -> bool:
            expected = await cluster_api.expected_children("shop")
            return expected <= set(await cluster_api.children("shop"))

        await eventually(all_applied, timeout=60)
        await eventually(
            lambda: cluster_api.get("v1", "Secret", render.triton_admin_secret_name("shop"))
        )
        degraded = await eventually(lambda: cluster_api.condition("shop", "Degraded"))
        assert degraded["status"] == "False", degraded
    # The account reads and watches Secrets in its namespace (a Secret a CR names takes effect
    # once it exists), never writes over one, and sees none elsewhere.
    assert await _can(kube, user, "get", "secrets", namespace)
    assert await _can(kube, user, "watch", "secrets", namespace)
    assert not await _can(kube, user, "update", "secrets", namespace)
    assert not await _can(kube, user, "get", "secrets", other_namespace)
    assert not await _can(kube, user, "list", "secrets", other_namespace)
