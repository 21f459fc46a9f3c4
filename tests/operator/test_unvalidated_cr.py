"""The operator re-checks every CR against the schema: one that bypassed it is Degraded.

The API server refuses such a CR (tests/operator/test_envtest_crd.py), but a schema edit leaves
CRs stored under the older schema behind, and the operator must not crash on them. That is what
happens here, on the real API server: the CRD is applied without its CEL rules, enums and
required lists, the CR is stored, the CRD is put back, and only then does the operator start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from envtest import ClusterApi, eventually, example_cr, install_crd, running_operator

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import crd
from freshrank_operator.kube import KubeError

pytestmark = pytest.mark.integration


# What an older, looser schema could have lacked (a type change cannot be stored either way).
LOOSENED = {"x-kubernetes-validations", "enum", "required"}


def _looser(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _looser(v) for k, v in value.items() if k not in LOOSENED}
    if isinstance(value, list):
        return [_looser(v) for v in value]
    return value


def _looser_crd() -> dict[str, Any]:
    """The CRD with a looser ``.spec`` (status keeps what its list-map keys need)."""
    document = crd.load_crd()
    for version in document["spec"]["versions"]:
        properties = version["schema"]["openAPIV3Schema"]["properties"]
        properties["spec"] = _looser(properties["spec"])
    return document


def _apply_crd(cluster: EmbeddedKubernetes, document: dict[str, Any]) -> None:
    # Forced: other tests of the session applied the CRD with field managers of their own.
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(document)
    )


def _restore_crd(cluster: EmbeddedKubernetes) -> None:
    _apply_crd(cluster, crd.load_crd())
    install_crd(cluster)  # and wait until it is Established and served


@pytest.fixture
def looser_schema(kube_cluster: EmbeddedKubernetes) -> Iterator[None]:
    """The CRD without its CEL rules, enums and required lists until the test has stored its
    CR; then the real one."""
    try:
        _apply_crd(kube_cluster, _looser_crd())
        yield
    finally:
        _restore_crd(kube_cluster)


async def _store(cluster_api: ClusterApi, body: dict[str, Any]) -> dict[str, Any]:
    """Create ``body``; a 422 means the server still holds the strict schema: try again."""

    async def created() -> dict[str, Any]:
        try:
            return await cluster_api.create_cr(body)
        except KubeError as exc:
            if exc.status != 422:
                raise
            raise AssertionError(f"still refused: {exc}") from exc

    stored: dict[str, Any] = await eventually(created, timeout=60)
    return stored


async def _strict_again(cluster_api: ClusterApi) -> None:
    """Until the server refuses a CR the CEL rules forbid (the real CRD is in effect)."""
    probe = example_cr("probe", cluster_api.namespace, autoscaling={"minReplicas": 2})
    probe["spec"]["autoscaling"]["maxReplicas"] = 1

    async def refused() -> bool:
        try:
            await cluster_api.create_cr(probe)
        except KubeError as exc:
            return exc.status == 422
        await cluster_api.delete_cr("probe")
        raise AssertionError("the looser schema is still in effect")

    await eventually(refused, timeout=60)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        # A CEL rule (x-kubernetes-validations) with its fieldPath.
        ({"autoscaling": {"minReplicas": 9, "maxReplicas": 3}}, "spec.autoscaling.minReplicas"),
        # An enum inside a list, and a required field.
        (
            {"trainer": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}},
            "spec.trainer.tolerations[0].operator",
        ),
        ({"kafka": {"partitions": 3}}, "spec.kafka.bootstrapServers"),
    ],
    ids=["cel-rule", "list-item", "required"],
)
async def test_a_cr_that_bypassed_the_schema_is_degraded_not_crashed(
    kube_cluster: EmbeddedKubernetes,
    cluster_api: ClusterApi,
    looser_schema: None,
    spec: dict[str, Any],
    field: str,
) -> None:
    namespace = cluster_api.namespace
    await _store(cluster_api, example_cr("shop", namespace, **spec))
    _restore_crd(kube_cluster)
    await _strict_again(cluster_api)
    async with running_operator(kube_cluster, namespace):
        condition = await eventually(lambda: cluster_api.condition("shop", "Degraded"))
        assert condition["status"] == "True", condition
        assert condition["reason"] == "InvalidSpec"
        assert str(condition["message"]).startswith(f"{field}: "), condition
        assert not await cluster_api.children("shop")
