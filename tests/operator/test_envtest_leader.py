"""Several operator replicas on the real API server (envtest): one leads through a Lease and
processes, the standby takes over when the leader stops; /readyz says what each one does."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from envtest import (
    ClusterApi,
    cluster_config,
    eventually,
    example_cr,
    kubeconfig_for,
    service_account_token,
)

from freshrank.embedded import free_port
from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator.kube import KubeClient
from freshrank_operator.leader import LEASE_API_VERSION
from freshrank_operator.testing import operator_thread

pytestmark = pytest.mark.integration
LEASE = "freshrank-operator"


async def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        body: dict[str, Any] = await response.json()
        return response.status, body


def _replica(cluster: EmbeddedKubernetes, namespace: str, name: str, port: int) -> Any:
    config = cluster_config(
        cluster,
        namespace,
        leader_election=True,
        pod_namespace=namespace,
        pod_name=name,
        lease_name=LEASE,
        lease_seconds=3,
        metrics_host="127.0.0.1",
        metrics_port=port,
    )
    return operator_thread(config, serve_metrics=True, wait_ready=False)


async def test_one_replica_leads_and_the_standby_takes_over(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    namespace = cluster_api.namespace
    port_a, port_b = free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_replica(kube_cluster, namespace, "replica-a", port_a))
        await eventually(lambda: _is(port_a, 200, "running"), timeout=60)
        replica_b = _replica(kube_cluster, namespace, "replica-b", port_b)
        await replica_b.__aenter__()
        try:
            standby = await eventually(lambda: _is(port_b, 200, "standby"), timeout=60)
            assert standby["leader"] == "replica-a"
            lease = await cluster_api.get(LEASE_API_VERSION, "Lease", LEASE)
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "replica-a"
            # Only the leader processes; the CR is reconciled once, by it.
            await cluster_api.create_cr(example_cr("shop", namespace))
            await eventually(lambda: _applied(cluster_api), timeout=60)
            # The leader stops (a rollout, a drained node): it releases the Lease, and the
            # standby takes over at once and processes the next change.
            await stack.aclose()
            await eventually(lambda: _is(port_b, 200, "running"), timeout=30)
            lease = await cluster_api.get(LEASE_API_VERSION, "Lease", LEASE)
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "replica-b"
            await cluster_api.patch_spec("shop", {"trainer": {"batchSize": 512}})
            await eventually(lambda: _trainer_batch_size(cluster_api, "512"), timeout=60)
        finally:
            await replica_b.__aexit__(None, None, None)


async def _is(port: int, status: int, state: str) -> dict[str, Any] | None:
    """The /readyz body when it answers ``status`` in ``state`` (None: not yet, not serving)."""
    try:
        got, body = await _readyz(port)
    except aiohttp.ClientError:
        return None
    return body if got == status and body.get("operator") == state else None


async def _applied(cluster_api: ClusterApi) -> bool:
    expected = await cluster_api.expected_children("shop")
    return expected <= set(await cluster_api.children("shop"))


async def _trainer_batch_size(cluster_api: ClusterApi, value: str) -> bool:
    trainer = await cluster_api.get("apps/v1", "StatefulSet", "shop-trainer")
    if trainer is None:
        return False
    env = trainer["spec"]["template"]["spec"]["containers"][0]["env"]
    return any(e["name"] == "FRESHRANK_BATCH_SIZE" and e.get("value") == value for e in env)


async def test_readyz_is_503_while_the_operator_cannot_process(
    kube_cluster: EmbeddedKubernetes, kube: KubeClient, cluster_api: ClusterApi, tmp_path: Path
) -> None:
    """Logged in as an account without RBAC: Kopf starts, yet nothing can be processed."""
    namespace = cluster_api.namespace
    token = await service_account_token(kube, namespace, "nobody")
    kubeconfig = kubeconfig_for(kube_cluster, token, tmp_path / "nobody.kubeconfig")
    port = free_port()
    config = cluster_config(
        kube_cluster,
        namespace,
        kubeconfig=str(kubeconfig),
        metrics_host="127.0.0.1",
        metrics_port=port,
    )
    async with operator_thread(config, serve_metrics=True):
        body = await eventually(lambda: _is(port, 503, "not processing"), timeout=60)
    assert "403" in body["reason"]
    assert "recommenderdeployments.freshrank.io" in body["reason"]


async def test_kopf_peering_without_its_crds_refuses_to_start(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    """It used to start, pause on the missing peering object, process and log nothing."""
    from freshrank_operator.runtime import run_operator

    config = cluster_config(kube_cluster, cluster_api.namespace, standalone=False)
    with pytest.raises(SystemExit, match="peering CRDs"):
        await run_operator(config, serve_metrics=False)
