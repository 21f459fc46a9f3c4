"""Bad RecommenderDeployments and what rejects them, shared by the local-schema tests and the
tests on the real API server (envtest): each names the field it breaks."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))
DELETE = object()


def minimal() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (REPO / "docs/examples/recdep-minimal.yaml").read_text()
    )
    return document


def with_value(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (the minimal example) with ``path`` (dotted) set to ``value`` or deleted."""
    document = copy.deepcopy(base if base is not None else minimal())
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return document


@dataclass(frozen=True)
class BadCr:
    path: str
    value: Any
    field: str  # the field both validators must name
    local: str  # in the message of freshrank_operator.crd's validator
    server: str = ""  # in the API server's message (CEL messages are ours: the same text)

    @property
    def id(self) -> str:
        return f"{self.path}={self.value!r}"[:60]


INVALID = [
    BadCr("spec.kafka.bootstrapServers", DELETE, "spec.kafka.bootstrapServers", "required"),
    BadCr("spec.kafka.partitions", 0, "spec.kafka.partitions", "minimum", "greater than"),
    BadCr("spec.autoscaling.engine", "vpa", "spec.autoscaling.engine", "is not one of"),
    BadCr(
        "spec.autoscaling.targetP95Ms",
        "fast",
        "spec.autoscaling.targetP95Ms",
        "is not of type",
        "must be of type number",
    ),
    BadCr("spec.triton.gpus", -1, "spec.triton.gpus", "minimum"),
    BadCr("spec.telemetry.sampleRatio", 1.5, "spec.telemetry.sampleRatio", "maximum"),
    BadCr("spec.model.learningRate", 0, "spec.model.learningRate", "minimum"),
    BadCr("spec.model.views", 0, "spec.model.views", "minimum", "greater than"),
    BadCr("spec.model.neighbours", -1, "spec.model.neighbours", "minimum", "greater than"),
    BadCr(
        "spec.trainer.qualityGate",
        {"metric": "auc"},
        "spec.trainer.qualityGate.metric",
        "one of",
        "supported values",
    ),
    BadCr(
        "spec.ranking.resources",
        {"limits": {"cpu": "lots"}},
        "spec.ranking.resources.limits.cpu",
        "",
    ),
    # Storage sizes are Kubernetes quantities (issue 11 defect 10: `10K` is not one).
    BadCr(
        "spec.trainer.checkpoint",
        {"size": "10K"},
        "spec.trainer.checkpoint.size",
        "does not match",
        "should match",
    ),
    BadCr(
        "spec.triton.modelRepository",
        {"size": "20 Gi"},
        "spec.triton.modelRepository.size",
        "does not match",
        "should match",
    ),
    # CEL rules (x-kubernetes-validations)
    BadCr(
        "spec.autoscaling",
        {"minReplicas": 5, "maxReplicas": 2},
        "spec.autoscaling.minReplicas",
        "must not exceed",
        "must not exceed",
    ),
    BadCr(
        "spec.autoscaling",
        {"engine": "keda"},
        "spec.autoscaling.prometheusUrl",
        "keda",
        "prometheusUrl is required",
    ),
    BadCr(
        "spec.triton.modelRepository",
        {"claimName": "models", "url": "s3://bucket/models"},
        "spec.triton.modelRepository",
        "either claimName or url",
        "either claimName or url",
    ),
    BadCr(
        "spec.featureStore",
        {"replicas": 3},
        "spec.featureStore.replicas",
        "dsnSecret",
        "needs featureStore.dsnSecret",
    ),
    BadCr("metadata.name", "shop_1", "metadata.name", "does not match"),
    BadCr("metadata.name", "s" * 41, "metadata.name", "is too long", "40"),
]
