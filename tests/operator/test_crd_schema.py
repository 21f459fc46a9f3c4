"""The CRD is structural, carries what kubectl shows, and rejects bad CRs naming the field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_crs import EXAMPLES, INVALID, REPO, BadCr, minimal, with_value

from freshrank_operator import crd, crd_validation


def _nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_crd_identity_and_kubectl_view() -> None:
    document = crd.load_crd()
    assert document["metadata"]["name"] == f"{crd.PLURAL}.{crd.GROUP}"
    assert document["spec"]["names"]["shortNames"] == ["recdep"]
    version = document["spec"]["versions"][0]
    assert version["name"] == crd.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.ranking.replicas"
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Model", "Freshness", "P95", "Replicas", "Age"]


def test_crd_validates_as_an_upstream_customresourcedefinition() -> None:
    import kubernetes_validate

    kubernetes_validate.validate(crd.load_crd(), "1.30", strict=True)


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string), no $ref, defaults valid for their node."""
    from jsonschema import Draft4Validator

    for path, node in _nodes(crd.object_schema()):
        assert "$ref" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        if "default" in node:
            assert not list(Draft4Validator(dict(node)).iter_errors(node["default"])), path


def test_schema_has_ranges_enums_and_cel_rules() -> None:
    spec = crd.spec_schema()["properties"]
    assert spec["autoscaling"]["properties"]["engine"]["enum"] == ["operator", "hpa", "keda"]
    assert spec["kafka"]["properties"]["partitions"]["minimum"] == 1
    rules = [
        rule["rule"]
        for _, node in _nodes(crd.object_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["kind"] == crd.KIND
    assert document["apiVersion"] == crd.API_VERSION
    assert crd_validation.schema_errors(document) == []


def test_there_are_minimal_gpu_and_hpa_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"recdep-minimal.yaml", "recdep-gpu-full.yaml", "recdep-hpa.yaml"} <= names


@pytest.mark.parametrize("bad", INVALID, ids=[bad.id for bad in INVALID])
def test_invalid_crs_are_rejected_naming_the_field(bad: BadCr) -> None:
    """The local validator (the operator re-checks CRs with it); the API server's own
    verdict on the same CRs: tests/operator/test_envtest_crd.py."""
    errors = crd_validation.schema_errors(with_value(bad.path, bad.value))
    assert errors, f"{bad.path}={bad.value!r} was accepted"
    assert errors[0].field == bad.field, errors
    assert bad.local in errors[0].message, errors
    with pytest.raises(ValueError, match=bad.field.replace(".", r"\.")):
        crd_validation.validate(with_value(bad.path, bad.value))


def test_every_property_has_a_description() -> None:
    """`kubectl explain recdep.spec` documents every field (issue 11 defect 14)."""
    # .metadata may carry nothing but name/generateName constraints (the API server says so).
    undocumented = [
        path
        for path, node in _nodes(crd.object_schema())
        if path not in {"", ".metadata"} and not node.get("description")
    ]
    assert undocumented == []


def test_transition_rules_are_left_to_the_api_server() -> None:
    """Immutability (`self == oldSelf`) needs the stored object: one CR alone passes it."""
    rules = [
        (path, rule["rule"])
        for path, node in _nodes(crd.object_schema())
        for rule in node.get("x-kubernetes-validations", [])
        if "oldSelf" in rule["rule"]
    ]
    paths = {path for path, _ in rules}
    assert {".spec.trainer.checkpoint.size", ".spec.triton.modelRepository.size"} <= paths
    document = with_value("spec.trainer.checkpoint", {"size": "20Gi", "storageClassName": "x"})
    assert crd_validation.schema_errors(document) == []


def test_defaults_are_filled_like_the_api_server() -> None:
    spec = crd_validation.validate(minimal())["spec"]
    assert spec["autoscaling"]["engine"] == "operator"
    assert spec["autoscaling"]["scaleDownStabilizationSeconds"] == 300
    assert spec["trainer"]["checkpoint"]["size"] == "10Gi"  # nested default of a default
    assert spec["triton"]["image"].startswith("nvcr.io/nvidia/tritonserver:")


def test_chart_ships_the_same_crd_file() -> None:
    chart_crd = REPO / "charts/freshrank/crds" / crd.CRD_FILE
    assert chart_crd.exists()
    assert chart_crd.resolve() == crd.crd_path().resolve() or (
        chart_crd.read_text() == crd.crd_path().read_text()
    )


def test_crd_path_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy_path = tmp_path / "crd.yaml"
    copy_path.write_text(crd.crd_path().read_text())
    monkeypatch.setenv(crd.CRD_PATH_ENV, str(copy_path))
    assert crd.crd_path() == copy_path
    assert crd.load_crd()["spec"]["group"] == crd.GROUP
