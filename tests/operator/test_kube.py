"""The operator's client adapter (freshrank_operator.kube) on the real API server: login again
on an expired token, lists across namespaces and by page, errors as the operator reads them."""

from __future__ import annotations

import pytest
from envtest import ClusterApi, credentials

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator.kube import (
    Conflict,
    Credentials,
    KubeClient,
    NotFound,
    ResourceTypeMissing,
    plural,
)

pytestmark = pytest.mark.integration


def _config_map(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"test": "kube"}},
        "data": {"k": name},
    }


async def test_an_expired_token_logs_in_again_once(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    good = credentials(kube_cluster)
    logins: list[Credentials] = []

    async def login() -> Credentials:
        # The first login hands out a token the server refuses (as an expired one is).
        logins.append(good if logins else Credentials(good.server, "expired", ca_data=good.ca_data))
        return logins[-1]

    async with KubeClient(login) as client:
        found = await client.get("v1", "Namespace", None, cluster_api.namespace)
        assert found["metadata"]["name"] == cluster_api.namespace
        assert len(logins) == 2


async def test_lists_by_namespace_across_namespaces_and_first_page(
    kube: KubeClient, cluster_api: ClusterApi
) -> None:
    for i in range(3):
        await cluster_api.create(_config_map(f"cm-{i}", cluster_api.namespace))
    labels = {"test": "kube"}
    mine = await kube.list("v1", "ConfigMap", cluster_api.namespace, labels=labels)
    assert sorted(c["metadata"]["name"] for c in mine) == ["cm-0", "cm-1", "cm-2"]
    everywhere = await kube.list("v1", "ConfigMap", None, labels=labels)
    assert {c["metadata"]["namespace"] for c in everywhere} >= {cluster_api.namespace}
    assert len(await kube.list("v1", "ConfigMap", cluster_api.namespace, limit=1)) == 1


async def test_errors_name_what_is_missing_or_taken(
    kube: KubeClient, cluster_api: ClusterApi
) -> None:
    namespace = cluster_api.namespace
    assert await kube.get_or_none("v1", "ConfigMap", namespace, "absent") is None
    with pytest.raises(NotFound) as missing:
        await kube.get("v1", "ConfigMap", namespace, "absent")
    assert not isinstance(missing.value, ResourceTypeMissing)
    assert await kube.delete("v1", "ConfigMap", namespace, "absent") is False
    await kube.create(_config_map("taken", namespace))
    with pytest.raises(Conflict):
        await kube.create(_config_map("taken", namespace))
    # KEDA is not installed on envtest: the kind itself is missing, not an object.
    with pytest.raises(ResourceTypeMissing):
        await kube.get_or_none("keda.sh/v1alpha1", "ScaledObject", namespace, "x")
    assert not await kube.served("keda.sh/v1alpha1", "ScaledObject", namespace)
    assert plural("keda.sh/v1alpha1", "ScaledObject") == "scaledobjects"


async def test_apply_creates_then_updates_and_owns_its_fields(
    kube: KubeClient, cluster_api: ClusterApi
) -> None:
    namespace = cluster_api.namespace
    created = await kube.apply(_config_map("applied", namespace))
    assert created["data"] == {"k": "applied"}
    updated = await kube.apply({**_config_map("applied", namespace), "data": {"k": "again"}})
    assert updated["data"] == {"k": "again"}
    managers = {m["manager"] for m in updated["metadata"]["managedFields"]}
    assert managers == {"freshrank-operator"}
