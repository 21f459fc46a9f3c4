"""The CRD is structural, carries what kubectl shows, and rejects bad CRs naming the field."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from freshrank_operator import crd

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))


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
    assert crd.schema_errors(document) == []


def test_there_are_minimal_gpu_and_hpa_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"recdep-minimal.yaml", "recdep-gpu-full.yaml", "recdep-hpa.yaml"} <= names


def _minimal() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docs/examples/recdep-minimal.yaml").read_text())


def _with(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(_minimal())
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return document


_DELETE = object()

INVALID = [
    ("spec.kafka.bootstrapServers", _DELETE, "spec.kafka.bootstrapServers", "required"),
    ("spec.kafka.partitions", 0, "spec.kafka.partitions", "minimum"),
    ("spec.autoscaling.engine", "vpa", "spec.autoscaling.engine", "is not one of"),
    ("spec.autoscaling.targetP95Ms", "fast", "spec.autoscaling.targetP95Ms", "is not of type"),
    ("spec.triton.gpus", -1, "spec.triton.gpus", "minimum"),
    ("spec.telemetry.sampleRatio", 1.5, "spec.telemetry.sampleRatio", "maximum"),
    ("spec.model.learningRate", 0, "spec.model.learningRate", "minimum"),
    ("spec.trainer.qualityGate", {"metric": "auc"}, "spec.trainer.qualityGate.metric", "one of"),
    (
        "spec.ranking.resources",
        {"limits": {"cpu": "lots"}},
        "spec.ranking.resources.limits.cpu",
        "",
    ),
    # CEL rules (x-kubernetes-validations)
    (
        "spec.autoscaling",
        {"minReplicas": 5, "maxReplicas": 2},
        "spec.autoscaling.minReplicas",
        "must not exceed",
    ),
    ("spec.autoscaling", {"engine": "keda"}, "spec.autoscaling.prometheusUrl", "keda"),
    (
        "spec.triton.modelRepository",
        {"claimName": "models", "url": "s3://bucket/models"},
        "spec.triton.modelRepository",
        "either claimName or url",
    ),
    ("spec.featureStore", {"replicas": 3}, "spec.featureStore.replicas", "dsnSecret"),
    ("metadata.name", "Shop_1", "metadata.name", "DNS-1035"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), INVALID, ids=[f"{c[0]}={c[1]!r}" for c in INVALID]
)
def test_invalid_crs_are_rejected_naming_the_field(
    path: str, value: Any, field: str, message: str
) -> None:
    errors = crd.schema_errors(_with(path, value))
    assert errors, f"{path}={value!r} was accepted"
    assert errors[0].field == field, errors
    assert message in errors[0].message, errors
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        crd.validate(_with(path, value))


def test_defaults_are_filled_like_the_api_server() -> None:
    spec = crd.validate(_minimal())["spec"]
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
