"""The operator observing itself: Prometheus metrics, a health server and reconcile traces."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from freshrank.core.metric_families import MetricFamilies

__all__ = ["OperatorMetrics"]


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        family = MetricFamilies(self.registry)
        self.reconcile_seconds = family.histogram(
            "freshrank_operator_reconcile_duration_seconds",
            "Time to reconcile one RecommenderDeployment",
            "handler",
            "outcome",
        )
        self.children_applied = family.counter(
            "freshrank_operator_children_applied",
            "Child objects written (changed renderings only)",
            "kind",
        )
        self.scale_decisions = family.counter(
            "freshrank_operator_scale_decisions", "Autoscaler decisions by direction", "direction"
        )
        self.ranking_p95_ms = family.gauge(
            "freshrank_operator_ranking_p95_ms",
            "Ranking p95 latency the autoscaler last saw",
            "namespace",
            "name",
        )
        self.degraded = family.gauge(
            "freshrank_operator_degraded",
            "1 when a RecommenderDeployment is Degraded",
            "namespace",
            "name",
        )
