"""The embedded control plane: TLS that verifies, token auth, RBAC with service-account tokens,
kube-controller-manager at work, and every process gone after stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from kube_assets import envtest_assets
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount
from waiting import eventually

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
        await admin.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        account = {"name": "reader", "namespace": namespace}
        await admin.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account})
        issued = await (await admin.native()).create(
            ServiceAccount.Token(
                metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=600)
            ),
            "reader",
            namespace=namespace,
        )
        assert issued.status is not None
        async with _client(kube_cluster, issued.status.token) as reader:
            with pytest.raises(KubeError) as denied:
                await reader.list("v1", "Secret", namespace)
            assert denied.value.status == 403
            rbac = "rbac.authorization.k8s.io/v1"
            role = {
                "apiVersion": rbac,
                "kind": "Role",
                "metadata": {"name": "read-secrets", "namespace": namespace},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
            }
            await admin.create(role)
            binding = {
                "apiVersion": rbac,
                "kind": "RoleBinding",
                "metadata": {"name": "reader-reads", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-secrets",
                },
                "subjects": [{"kind": "ServiceAccount", **account}],
            }
            await admin.create(binding)
            assert await _list_once_allowed(reader, namespace)
        await admin.delete("v1", "Namespace", None, namespace)


async def _list_once_allowed(reader: KubeClient, namespace: str) -> bool:
    """True once the reader may list Secrets: its new binding has taken effect.

    The RBAC authorizer reads bindings from a watch cache, so a binding allows a moment after
    it is created (a busy machine made that moment long enough to fail an immediate check).
    Only 403 means "not yet"; any other error fails at once."""

    async def listed() -> bool:
        try:
            secrets = await reader.list("v1", "Secret", namespace)
        except KubeError as exc:
            if exc.status != 403:
                raise
            raise AssertionError(f"still forbidden to list Secrets: {exc}") from exc
        return isinstance(secrets, list)

    result: bool = await eventually(listed, timeout=60)
    return result


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
