"""The RecommenderDeployment spec, typed: parsed and defaulted once per generation.

``crds/recommenderdeployments.freshrank.io.yaml`` stays the schema the API server validates
and defaults with; these models mirror it for the operator's own code (renderer, controller,
autoscaler), so nothing downstream looks a field up by a string. ``tests/operator/
test_spec_model.py`` walks the CRD's openAPIV3Schema against the models' JSON schema: every
property has a field and every field a property, with the same type, enum, default, range,
pattern and requiredness; and the CEL rules below reject what the CRD's rules reject.

Why pydantic (not frozen dataclasses): parsing a CR is validation (types, ranges, enums,
patterns, cross-field rules), camelCase aliases and nested defaults, and a CR that bypassed
the API server's schema must be reported field by field. Pydantic does all of that from the
declarations, its error locations name the field (``spec.autoscaling.minReplicas``), and its
JSON schema is what the CRD test compares. Dataclasses would need a hand-written parser of the
same size as these models. Pydantic was installed already (``kubernetes`` requires it); it is
now a declared dependency of its own.

Validation is strict (``"50"`` is not a number, ``"true"`` not a boolean), as in the API
server; unknown fields are ignored, as the API server prunes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from freshrank.core.service_settings import Architecture
from freshrank_operator.crd import SchemaError, dotted_path

__all__ = [
    "Autoscaling",
    "Checkpoint",
    "DsnSecret",
    "FeatureStore",
    "InvalidSpec",
    "Kafka",
    "Model",
    "ModelRepository",
    "ObjectMeta",
    "QualityGate",
    "Ranking",
    "RecommenderDeployment",
    "RecommenderSpec",
    "Resources",
    "SecretRef",
    "Telemetry",
    "Toleration",
    "Trainer",
    "Triton",
    "parse",
    "parse_spec",
]


class _Group(BaseModel):
    """A group of the spec: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
        extra="ignore",
        frozen=True,
    )


def _whole_as_int(value: float) -> float:
    # JSON has one number type and the API server hands integral numbers back as integers
    # (2.0 comes back as 2): kept that way, a spec reads and renders exactly as the server's
    # object (ConfigMap values, manifest hashes) whether or not the server defaulted it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A CRD ``number`` is ``Annotated[float, Field(<range>), *WHOLE_AS_INT]``: the range first, so
# that it stays the float's constraint (and the JSON schema's, which the CRD test compares).
WHOLE_AS_INT = (
    AfterValidator(_whole_as_int),
    PlainSerializer(_whole_as_int, return_type=int | float),
)

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
STORAGE_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253)]


def _one_quantity_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One error per bad quantity, not one per member of ``int | str``."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "quantity",
            "not a Kubernetes quantity (an integer, or a string like 500m or 1Gi)",
        ) from None


# A Kubernetes quantity (int-or-string in the CRD): 2, "500m", "1Gi".
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    WrapValidator(_one_quantity_error),
]


def _rule_broken(field: str, message: str) -> PydanticCustomError:
    """A CEL rule of the CRD, broken: ``field`` is the rule's ``fieldPath`` (under the
    group), or empty for the group itself; ``parse`` appends it to the error's location."""
    return PydanticCustomError("rule", message, {"field": field})


# --- the groups ------------------------------------------------------------------------------


class SecretRef(_Group):
    name: ObjectName


class DsnSecret(_Group):
    name: ObjectName
    key: Annotated[str, StringConstraints(min_length=1)] = "dsn"


class Kafka(_Group):
    bootstrap_servers: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    partitions: Annotated[int, Field(ge=1, le=1024)] = 6
    credentials_secret: SecretRef | None = None


class Resources(_Group):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class FeatureStore(_Group):
    dsn_secret: DsnSecret | None = None
    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    resources: Resources | None = None

    @model_validator(mode="after")
    def _single_writer(self) -> FeatureStore:
        if self.dsn_secret is None and self.replicas != 1:
            raise _rule_broken(
                "replicas",
                "featureStore.replicas above 1 needs featureStore.dsnSecret "
                "(SQLite is single-writer)",
            )
        return self


class Model(_Group):
    architecture: Architecture = "sasrec"
    dim: Annotated[int, Field(ge=2, le=4096)] = 32
    history_length: Annotated[int, Field(ge=1, le=1024)] = 20
    views: Annotated[int, Field(ge=1, le=8)] = 2
    neighbours: Annotated[int, Field(ge=0, le=1000)] = 100
    num_users: Annotated[int, Field(ge=16, le=1_000_000_000)] = 100_000
    num_items: Annotated[int, Field(ge=16, le=1_000_000_000)] = 100_000
    learning_rate: Annotated[float, Field(gt=0, le=1), *WHOLE_AS_INT] = 0.001


class Toleration(_Group):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


NodeSelector = dict[str, str]
Tolerations = Annotated[list[Toleration], Field(max_length=32)]


class Checkpoint(_Group):
    size: Annotated[str, StringConstraints(pattern=STORAGE_PATTERN)] = "10Gi"
    storage_class_name: Annotated[str, StringConstraints(max_length=253)] | None = None


class QualityGate(_Group):
    # The names of core.contracts.quality.QualityMetric (a Literal: the strict parse takes the
    # CR's strings; tests check the CRD's enum against both).
    metric: Literal["hr@10", "ndcg@10", "hr@10_full", "ndcg@10_full"] = "ndcg@10"
    max_regression: Annotated[float, Field(ge=0, le=1), *WHOLE_AS_INT] = 0.05
    min_events: Annotated[int, Field(ge=0)] = 1000


class Trainer(_Group):
    resources: Resources | None = None
    gpus: Annotated[int, Field(ge=0, le=16)] = 0
    image: Annotated[str, StringConstraints(max_length=512)] | None = None
    node_selector: NodeSelector | None = None
    tolerations: Tolerations | None = None
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 256
    export_interval_seconds: Annotated[int, Field(ge=5, le=86400)] = 60
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    quality_gate: QualityGate = Field(default_factory=QualityGate)


class ModelRepository(_Group):
    claim_name: Annotated[str, StringConstraints(max_length=253)] | None = None
    url: Annotated[str, StringConstraints(pattern=r"^(s3|gs|as)://.+")] | None = None
    size: Annotated[str, StringConstraints(pattern=STORAGE_PATTERN)] = "20Gi"
    storage_class_name: Annotated[str, StringConstraints(max_length=253)] | None = None

    @model_validator(mode="after")
    def _one_location(self) -> ModelRepository:
        if self.claim_name is not None and self.url is not None:
            raise _rule_broken("", "triton.modelRepository takes either claimName or url, not both")
        return self


class Triton(_Group):
    image: Annotated[str, StringConstraints(pattern=r"^[^\s]+$")] = (
        "nvcr.io/nvidia/tritonserver:24.10-py3"
    )
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    gpus: Annotated[int, Field(ge=0, le=16)] = 1
    resources: Resources | None = None
    node_selector: NodeSelector | None = None
    tolerations: Tolerations | None = None
    model_repository: ModelRepository = Field(default_factory=ModelRepository)


class Ranking(_Group):
    replicas: Annotated[int, Field(ge=0, le=1000)] = 2
    resources: Resources | None = None
    timeout_ms: Annotated[int, Field(ge=1, le=60000)] = 100


Engine = Literal["operator", "hpa", "keda"]


class Autoscaling(_Group):
    enabled: bool = True
    engine: Engine = "operator"
    target_p95_ms: Annotated[float, Field(ge=1, le=60000), *WHOLE_AS_INT] = 50
    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    period_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    window_seconds: Annotated[int, Field(ge=10, le=3600)] = 60
    scale_up_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 0
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    max_scale_up_factor: Annotated[float, Field(ge=1, le=10), *WHOLE_AS_INT] = 2
    max_scale_down_step: Annotated[int, Field(ge=1, le=100)] = 1
    tolerance: Annotated[float, Field(ge=0, le=0.9), *WHOLE_AS_INT] = 0.1
    prometheus_url: Annotated[str, StringConstraints(pattern=r"^https?://.+")] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise _rule_broken(
                "minReplicas", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
            )
        if self.engine == "keda" and self.prometheus_url is None:
            raise _rule_broken(
                "prometheusUrl",
                "autoscaling.prometheusUrl is required when autoscaling.engine is keda",
            )
        return self

    @property
    def operator_scales(self) -> bool:
        """The operator's own latency autoscaler decides the ranking replicas."""
        return self.enabled and self.engine == "operator"

    @property
    def external_engine(self) -> Literal["hpa", "keda"] | None:
        """The engine that owns the ranking replicas instead of the operator, if any."""
        if not self.enabled or self.engine == "operator":
            return None
        return self.engine


class Telemetry(_Group):
    otlp_endpoint: Annotated[str, StringConstraints(pattern=r"^(https?://.+)?$")] = ""
    sample_ratio: Annotated[float, Field(ge=0, le=1), *WHOLE_AS_INT] = 0.1
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class RecommenderSpec(_Group):
    """``RecommenderDeployment.spec``, defaulted as the API server defaults it."""

    image: Annotated[str, StringConstraints(max_length=512)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    kafka: Kafka
    feature_store: FeatureStore = Field(default_factory=FeatureStore)
    model: Model = Field(default_factory=Model)
    trainer: Trainer = Field(default_factory=Trainer)
    triton: Triton = Field(default_factory=Triton)
    ranking: Ranking = Field(default_factory=Ranking)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    telemetry: Telemetry = Field(default_factory=Telemetry)

    def secret_names(self) -> set[str]:
        """The Secrets the spec names (their changes trigger a reconcile)."""
        refs = (self.kafka.credentials_secret, self.feature_store.dsn_secret)
        return {ref.name for ref in refs if ref is not None}

    def claim_names(self) -> set[str]:
        """The PersistentVolumeClaims the spec names."""
        claim = self.triton.model_repository.claim_name
        return {claim} if claim else set()

    def to_dict(self) -> dict[str, Any]:
        """The defaulted spec as the API server would store it (camelCase, absent not null)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ObjectMeta(_Group):
    # Children are named <name>-<role>; Service names are DNS-1035 labels of at most 63.
    name: (
        Annotated[str, StringConstraints(max_length=40, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]
        | None
    ) = None


class RecommenderDeployment(_Group):
    """The parts of a RecommenderDeployment the schema constrains (status is the operator's)."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta | None = None
    spec: RecommenderSpec


# --- parsing ---------------------------------------------------------------------------------


class InvalidSpec(ValueError):
    """A RecommenderDeployment its schema rejects: ``errors`` name each field."""

    def __init__(self, errors: list[SchemaError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _schema_errors(error: ValidationError, prefix: tuple[str, ...]) -> list[SchemaError]:
    out = []
    for detail in error.errors(include_url=False):
        location: tuple[int | str, ...] = (*prefix, *detail["loc"])
        context = detail.get("ctx") or {}
        message = detail["msg"]
        if detail["type"] == "rule":
            if context.get("field"):
                location = (*location, str(context["field"]))
        elif detail["type"] != "missing":
            message = f"{message} (got {detail['input']!r})"
        out.append(SchemaError(dotted_path(location), message))
    return out


def parse_spec(spec: Mapping[str, Any]) -> RecommenderSpec:
    """``spec`` (as read from the API) parsed and defaulted, or ``InvalidSpec``."""
    try:
        return RecommenderSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpec(_schema_errors(error, ("spec",))) from None


def parse(cr: Mapping[str, Any]) -> RecommenderDeployment:
    """A whole RecommenderDeployment (metadata.name and spec checked), or ``InvalidSpec``."""
    try:
        return RecommenderDeployment.model_validate(cr)
    except ValidationError as error:
        raise InvalidSpec(_schema_errors(error, ())) from None
