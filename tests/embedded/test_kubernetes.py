"""The embedded control plane: TLS that verifies, token auth, RBAC with service-account tokens,
kube-controller-manager at work, and every process gone after stop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_assets import envtest_assets

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator.kube import Credentials, KubeClient, KubeError

pytestmark = pytest.mark.integration


def _client(cluster: EmbeddedKubernetes, token: str) -> KubeClient:
    creds = Credentials(server=cluster.server, token=token, ca_data=cluster.ca_data())

    async def login() -> Credentials:
        return creds

    return KubeClient(login)


def test_the_kubeconfig_logs_kubectl_in_as_admin(kube_cluster: EmbeddedKubernetes) -> None:
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert "insecure-skip-tls-verify" not in config["clusters"][0]["cluster"]
    assert kube_cluster.kubectl("auth", "can-i", "*", "*").strip() == "yes"


async def test_rbac_decides_for_a_service_account_token(kube_cluster: EmbeddedKubernetes) -> None:
    """Service-account keys sign TokenRequest tokens; RBAC denies until a binding allows."""
    async with _client(kube_cluster, kube_cluster.token) as admin:
        namespace = "rbac-check"
        await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        sa_path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        await admin.request("POST", sa_path, body={"metadata": {"name": "reader"}})
        request: dict[str, Any] = await admin.request(
            "POST", f"{sa_path}/reader/token", body={"spec": {"expirationSeconds": 600}}
        )
        token = request["status"]["token"]
        async with _client(kube_cluster, token) as reader:
            secrets = f"/api/v1/namespaces/{namespace}/secrets"
            with pytest.raises(KubeError) as denied:
                await reader.request("GET", secrets)
            assert denied.value.status == 403
            role = {
                "metadata": {"name": "read-secrets"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
            }
            rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
            await admin.request("POST", f"{rbac}/roles", body=role)
            binding = {
                "metadata": {"name": "reader-reads"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-secrets",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            }
            await admin.request("POST", f"{rbac}/rolebindings", body=binding)
            assert (await reader.request("GET", secrets))["kind"] == "SecretList"
        await admin.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    cluster = EmbeddedKubernetes(tmp_path, envtest_assets())
    with cluster:
        assert cluster.kubectl("get", "--raw", "/readyz").strip() == "ok"
        assert cluster.controller_manager is not None
        pids = [
            p.process.pid for p in (cluster.etcd, cluster.apiserver, cluster.controller_manager)
        ]
        assert all(pids)
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still runs"
    assert os.listdir(tmp_path / "logs")


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
