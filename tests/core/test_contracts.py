"""The contracts defined once in ``freshrank.core.contracts`` agree with their other sources:
the CRD's schema, the trainer's settings and the servers' route tables."""

from __future__ import annotations

from freshrank.core.contracts import routes
from freshrank.core.contracts.quality import ROLLING_NAMES, QualityMetric
from freshrank.core.http import create_app
from freshrank.model.learner import StepMetrics
from freshrank.trainer.settings import TrainerSettings
from freshrank_operator import crd


def _gate_metric_schema() -> dict[str, object]:
    trainer = crd.spec_schema()["properties"]["trainer"]
    metric: dict[str, object] = trainer["properties"]["qualityGate"]["properties"]["metric"]
    return metric


def test_crd_quality_metric_enum_is_the_python_enum() -> None:
    schema = _gate_metric_schema()
    assert schema["enum"] == [metric.value for metric in QualityMetric]
    assert schema["default"] == TrainerSettings().quality_metric


def test_every_quality_metric_names_a_learner_step_field() -> None:
    fields = StepMetrics.__dataclass_fields__
    assert all(metric.step_field in fields for metric in QualityMetric)
    assert set(QualityMetric) < set(ROLLING_NAMES)


def test_every_service_serves_the_operational_routes() -> None:
    app = create_app("contract-test")
    served = {
        info.resource.canonical
        for info in app.router.routes()
        if info.resource is not None and info.method == "GET"
    }
    assert served >= routes.OPERATIONAL


def test_feature_paths_quote_ids_into_the_route_templates() -> None:
    assert routes.feature_user_path("a/b?c") == "/v1/users/a%2Fb%3Fc"
    assert routes.feature_item_path("i 1") == "/v1/items/i%201"
    assert routes.feature_popular_path(5) == "/v1/items:popular?k=5"
