"""The operator under the chart's RBAC, on the real API server: logged in as its
ServiceAccount with the chart's rules (watchNamespaces mode: the cluster-scoped reads plus a
Role in the watched namespace), it reconciles, reports status and cleans up with no 403."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envtest import (
    ClusterApi,
    eventually,
    grant_chart_rbac,
    kubeconfig_for,
    running_operator,
    service_account_token,
)

from freshrank.embedded.kubernetes import EmbeddedKubernetes

pytestmark = pytest.mark.integration


async def test_the_operator_works_within_the_charts_rbac(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, tmp_path: Path
) -> None:
    token = await service_account_token(cluster_api.client, cluster_api.namespace, "freshrank")
    kubeconfig = kubeconfig_for(kube_cluster, token, tmp_path / "kubeconfig")
    cluster_role = await grant_chart_rbac(cluster_api.client, cluster_api.namespace, "freshrank")
    async with running_operator(kube_cluster, cluster_api.namespace, kubeconfig=str(kubeconfig)):
        await cluster_api.create_example("shop", timeout=60)

        async def observed() -> dict[str, Any] | None:
            status = await cluster_api.status("shop")
            return status if status.get("observedGeneration") == 1 else None

        status = await eventually(observed, timeout=60)
        degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
        assert degraded["status"] == "False", degraded
        await cluster_api.delete_cr("shop")

        async def gone() -> bool:
            return await cluster_api.cr("shop") is None and not await cluster_api.children("shop")

        await eventually(gone, timeout=60)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        await cluster_api.client.delete("rbac.authorization.k8s.io/v1", kind, None, cluster_role)
