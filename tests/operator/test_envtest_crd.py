"""The CRD on the real API server (envtest): accepted, examples apply, bad CRs rejected naming the
field, storage sizes are quantities and immutable, defaults match the local validator's."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_crs import EXAMPLES, INVALID, BadCr, minimal, with_value
from envtest import ClusterApi

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import crd_validation
from freshrank_operator.kube import KubeError
from freshrank_operator.spec import parse

pytestmark = pytest.mark.integration


def _in(namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(document)
    body["metadata"]["namespace"] = namespace
    return body


def test_the_crd_is_accepted_and_established(recdep_crd: dict[str, Any]) -> None:
    conditions = {c["type"]: c for c in recdep_crd["status"]["conditions"]}
    assert conditions["NamesAccepted"]["status"] == "True"
    assert conditions["Established"]["status"] == "True"
    assert recdep_crd["status"]["acceptedNames"]["shortNames"] == ["recdep"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies_with_kubectl_in_a_fresh_namespace(
    kube_cluster: EmbeddedKubernetes, namespace: str, path: Path
) -> None:
    out = kube_cluster.kubectl("-n", namespace, "apply", "-f", str(path))
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    assert out.strip() == f"recommenderdeployment.freshrank.io/{name} created"
    live = yaml.safe_load(
        kube_cluster.kubectl("-n", namespace, "get", "recdep", name, "-o", "yaml")
    )
    assert live["metadata"]["namespace"] == namespace


def test_no_example_claims_a_volume_another_example_owns() -> None:
    """The GPU example used claimName shop-models: the PVC the minimal example's CR creates."""
    documents = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    owned = {f"{d['metadata']['name']}-models" for d in documents}
    claimed = {
        d["spec"].get("triton", {}).get("modelRepository", {}).get("claimName") for d in documents
    }
    assert not owned & claimed


@pytest.mark.parametrize("bad", INVALID, ids=[bad.id for bad in INVALID])
async def test_the_api_server_rejects_bad_crs_naming_the_field(
    cluster_api: ClusterApi, bad: BadCr
) -> None:
    body = _in(cluster_api.namespace, with_value(bad.path, bad.value))
    with pytest.raises(KubeError) as rejected:
        await cluster_api.create_cr(body)
    assert rejected.value.status == 422, rejected.value
    assert bad.field in rejected.value.message
    assert bad.server in rejected.value.message


@pytest.mark.parametrize("size", ["10Gi", "500M", "1.5Ti", "10k", "1073741824"])
async def test_storage_sizes_accept_kubernetes_quantities(
    cluster_api: ClusterApi, size: str
) -> None:
    body = _in(cluster_api.namespace, with_value("spec.trainer.checkpoint", {"size": size}))
    created = await cluster_api.create_cr(body)
    assert created["spec"]["trainer"]["checkpoint"]["size"] == size


@pytest.mark.parametrize(
    "spec_patch",
    [
        {},
        # Numbers given as integers and as fractions, and optional groups left out or given.
        {
            "autoscaling": {"targetP95Ms": 40, "maxScaleUpFactor": 1.5, "tolerance": 0},
            "telemetry": {"sampleRatio": 1},
            "featureStore": {"dsnSecret": {"name": "dsn"}, "replicas": 2},
            "trainer": {"tolerations": [{"key": "gpu", "operator": "Exists"}]},
        },
    ],
    ids=["minimal", "given"],
)
async def test_the_server_defaults_match_the_local_defaults(
    cluster_api: ClusterApi, spec_patch: dict[str, Any]
) -> None:
    """The CRD's defaulting (crd_validation.validate) and the operator's typed spec
    (spec.parse) give what the API server stores: the same values of the same JSON types."""
    body = _in(cluster_api.namespace, minimal())
    body["spec"].update(copy.deepcopy(spec_patch))
    created = await cluster_api.create_cr(body)
    assert created["spec"] == crd_validation.validate(body)["spec"]
    typed = parse(body).spec.to_dict()
    assert json.dumps(typed, sort_keys=True) == json.dumps(created["spec"], sort_keys=True)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("trainer.checkpoint.size", {"trainer": {"checkpoint": {"size": "20Gi"}}}),
        ("triton.modelRepository.size", {"triton": {"modelRepository": {"size": "40Gi"}}}),
        (
            "trainer.checkpoint.storageClassName",
            {"trainer": {"checkpoint": {"storageClassName": "fast"}}},
        ),
        (
            "triton.modelRepository.storageClassName",
            {"triton": {"modelRepository": {"storageClassName": "fast"}}},
        ),
    ],
)
async def test_immutable_storage_fields_are_rejected_at_admission(
    cluster_api: ClusterApi, field: str, change: dict[str, Any]
) -> None:
    """Issue 11 defect 4: a StatefulSet's claim template and a PVC's size cannot change, so
    the change is refused when it is made, not reported later as a 422 from a child."""
    await cluster_api.create_cr(_in(cluster_api.namespace, minimal()))
    with pytest.raises(KubeError) as rejected:
        await cluster_api.patch_spec("shop", change)
    assert rejected.value.status == 422
    assert field in rejected.value.message
    assert "immutable" in rejected.value.message or "cannot be added" in rejected.value.message
    live = await cluster_api.cr("shop")
    assert live is not None
    assert live["metadata"]["generation"] == 1
    # Everything else still changes.
    patched = await cluster_api.patch_spec("shop", {"trainer": {"batchSize": 1024}})
    assert patched["metadata"]["generation"] == 2


def test_kubectl_explain_documents_every_field(
    kube_cluster: EmbeddedKubernetes, recdep_crd: dict[str, Any]
) -> None:
    """Issue 11 defect 14, as a platform team reads it (the schema walk: test_crd_schema)."""
    out = kube_cluster.kubectl("explain", "recdep.spec", "--recursive=false")
    assert "<empty>" not in out
    for group in ("kafka", "featureStore", "model", "trainer", "triton", "ranking"):
        assert f"  {group}\t" in out
    size = kube_cluster.kubectl("explain", "recdep.spec.trainer.checkpoint.size")
    assert "Kubernetes quantity" in size
    assert "immutable" in size


def test_kubectl_reports_a_rejection_naming_the_field(
    kube_cluster: EmbeddedKubernetes, namespace: str
) -> None:
    body = with_value("spec.trainer.checkpoint", {"size": "10K"})
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        kube_cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert "spec.trainer.checkpoint.size" in rejected.value.stderr
