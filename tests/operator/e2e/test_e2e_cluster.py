"""End to end on a cluster: ``FRESHRANK_E2E_KUBECONFIG=/path/to/kubeconfig`` for any cluster,
else the session's envtest control plane (so it runs in every ``make test``).

Applies the CRD and the minimal example to a throwaway namespace, runs the operator from this
process against the cluster, and checks what the emulator cannot: the API server's schema
(defaults, CEL rejections), status subresource, generation, ownerReference garbage collection.
On envtest there is no kubelet: Pods stay Pending, so the CR reports Ready=False, NotReady.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from freshrank_operator import crd, render
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import credentials_from
from freshrank_operator.kube import Credentials, KubeClient, KubeError
from freshrank_operator.login import kubeconfig_login

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "recdep-minimal.yaml"


@pytest.fixture(scope="module")
def kubeconfig(request: pytest.FixtureRequest) -> str:
    """The cluster's kubeconfig; envtest is started only when no cluster is given."""
    given = os.environ.get("FRESHRANK_E2E_KUBECONFIG")
    if given:
        return given
    return str(request.getfixturevalue("kube_cluster").kubeconfig)


@pytest.fixture
async def client(kubeconfig: str) -> AsyncIterator[KubeClient]:
    async def login() -> Credentials:
        return credentials_from(kubeconfig_login(kubeconfig))

    async with KubeClient(login) as api:
        yield api


@pytest.fixture
async def namespace(client: KubeClient) -> AsyncIterator[str]:
    name = f"freshrank-e2e-{uuid.uuid4().hex[:6]}"
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await client.delete("v1", "Namespace", None, name)


async def _apply_crd(client: KubeClient) -> None:
    document = crd.load_crd()
    await client.apply(document, field_manager="freshrank-e2e")
    for _ in range(60):  # established?
        live = await client.get(
            document["apiVersion"], document["kind"], None, document["metadata"]["name"]
        )
        status = live.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conditions.get("Established") == "True" and await _served(client):
            return
        await asyncio.sleep(1)
    raise AssertionError("the CRD did not become Established")


async def _served(client: KubeClient) -> bool:
    """The CRs' endpoint answers (it can lag the Established condition by a moment)."""
    try:
        return await client.served(crd.API_VERSION, crd.KIND)
    except KubeError:
        return False


async def _wait(check: Any, timeout: float = 120.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(1)
    raise AssertionError("timed out")


async def test_crd_rejects_invalid_crs_naming_the_field(client: KubeClient, namespace: str) -> None:
    await _apply_crd(client)
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"]["autoscaling"] = {"minReplicas": 5, "maxReplicas": 2}
    with pytest.raises(KubeError) as error:
        await client.create(body)
    assert error.value.status == 422
    assert "minReplicas" in error.value.message


async def test_example_cr_gets_children_and_status(
    client: KubeClient, namespace: str, kubeconfig: str
) -> None:
    from freshrank_operator.testing import operator_thread

    await _apply_crd(client)
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    config = OperatorConfig(
        kubeconfig=kubeconfig, namespaces=namespace, ensure_topics=False, tick_seconds=2.0
    )
    async with operator_thread(config):
        created = await client.create(body)
        assert created["spec"]["autoscaling"]["engine"] == "operator"  # server-side default
        expected = [render.child_key(m) for m in render.render(created)]

        async def children_present() -> bool:
            for api_version, kind, name in expected:
                if await client.get_or_none(api_version, kind, namespace, name) is None:
                    return False
            return True

        await _wait(children_present)

        async def status_observed() -> dict[str, Any] | None:
            live = await client.get(crd.API_VERSION, crd.KIND, namespace, body["metadata"]["name"])
            status = live.get("status") or {}
            return status if status.get("observedGeneration") == 1 else None

        status = await _wait(status_observed)
        conditions = {c["type"]: c for c in status["conditions"]}
        assert set(conditions) == {"Ready", "Progressing", "Degraded"}
        assert conditions["Degraded"]["status"] == "False", conditions["Degraded"]
        name = created["metadata"]["name"]
        selector = render.selector_labels(name, "ranking")
        assert status["selector"] == ",".join(f"{k}={v}" for k, v in selector.items())
        owner = created["metadata"]["uid"]
        config_map = await client.get("v1", "ConfigMap", namespace, f"{name}-config")
        assert config_map["metadata"]["ownerReferences"][0]["uid"] == owner
        if not os.environ.get("FRESHRANK_E2E_KUBECONFIG"):
            # envtest: the controller manager creates the Pods; no kubelet runs them.
            pods = await _wait(lambda: client.list("v1", "Pod", namespace))
            assert {p["status"].get("phase") for p in pods} == {"Pending"}
            assert conditions["Ready"]["status"] == "False"
            assert conditions["Ready"]["reason"].endswith("NotReady")
        await client.delete(crd.API_VERSION, crd.KIND, namespace, body["metadata"]["name"])

        async def gone() -> bool:
            name = f"{body['metadata']['name']}-config"
            return await client.get_or_none("v1", "ConfigMap", namespace, name) is None

        await _wait(gone)
