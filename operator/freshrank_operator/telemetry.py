"""The operator observing itself: Prometheus metrics, a health server and reconcile traces."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OperatorMetrics"]


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconcile_seconds = Histogram(
            "freshrank_operator_reconcile_duration_seconds",
            "Time to reconcile one RecommenderDeployment",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self.children_applied = Counter(
            "freshrank_operator_children_applied",
            "Child objects written (changed renderings only)",
            ["kind"],
            registry=self.registry,
        )
        self.scale_decisions = Counter(
            "freshrank_operator_scale_decisions",
            "Autoscaler decisions by direction",
            ["direction"],
            registry=self.registry,
        )
        self.ranking_p95_ms = Gauge(
            "freshrank_operator_ranking_p95_ms",
            "Ranking p95 latency the autoscaler last saw",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "freshrank_operator_degraded",
            "1 when a RecommenderDeployment is Degraded",
            ["namespace", "name"],
            registry=self.registry,
        )
