"""Each CR's Triton admin key on the real API server (envtest): a Secret the operator makes
once, owned by the CR and kept across reconciles; a key the platform team provides is used."""

from __future__ import annotations

import base64

import pytest
from envtest import ClusterApi, eventually, example_cr, running_operator

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import render

pytestmark = pytest.mark.integration
SECRET = render.triton_admin_secret_name("shop")


async def _trainer_batch_size(cluster_api: ClusterApi) -> str | None:
    trainer = await cluster_api.get("apps/v1", "StatefulSet", "shop-trainer")
    if trainer is None:
        return None
    env = trainer["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "FRESHRANK_BATCH_SIZE")


async def test_the_operator_creates_the_key_once_and_keeps_it(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    async with running_operator(kube_cluster, cluster_api.namespace):
        cr = await cluster_api.create_cr(example_cr("shop", cluster_api.namespace))
        secret = await eventually(lambda: cluster_api.get("v1", "Secret", SECRET))
        assert secret["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
        key = base64.b64decode(secret["data"][render.TRITON_ADMIN_SECRET_KEY]).decode()
        assert len(key) >= 40  # 32 random bytes, URL-safe base64
        # A spec change reconciles again: the key (and so Triton's restriction) stays.
        await eventually(lambda: _trainer_batch_size(cluster_api), timeout=60)
        await cluster_api.patch_spec("shop", {"trainer": {"batchSize": 512}})

        async def reconciled() -> bool:
            return await _trainer_batch_size(cluster_api) == "512"

        await eventually(reconciled, timeout=60)
    kept = await cluster_api.get("v1", "Secret", SECRET)
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]


async def test_a_key_the_platform_team_provides_is_used_as_it_is(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    provided = base64.b64encode(b"our-own-key").decode()
    created = await cluster_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET},
            "data": {"key": provided},
        }
    )
    async with running_operator(kube_cluster, cluster_api.namespace):
        await cluster_api.create_cr(example_cr("shop", cluster_api.namespace))
        await eventually(
            lambda: cluster_api.get("networking.k8s.io/v1", "NetworkPolicy", "shop-network"),
            timeout=60,
        )
    secret = await cluster_api.get("v1", "Secret", SECRET)
    assert secret is not None
    assert secret["data"]["key"] == provided
    assert secret["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
