"""The ranking service's own Prometheus metrics (the request histogram comes from core.http)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from freshrank.core.contracts import metrics
from freshrank.core.http import LATENCY_BUCKETS
from freshrank.core.metric_families import MetricFamilies

__all__ = ["RankingMetrics"]


class RankingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        families = MetricFamilies(registry)
        self.scorer_latency = families.histogram(
            "freshrank_triton_request_duration_seconds",
            "Model inference call latency (Triton, or in-process when scorer=torch)",
            "scorer",
            "outcome",
            buckets=LATENCY_BUCKETS,
        )
        self.feature_latency = families.histogram(
            "freshrank_feature_lookup_duration_seconds",
            "Feature service lookup latency",
            "outcome",
            buckets=LATENCY_BUCKETS,
        )
        self.fallbacks = families.counter(
            metrics.RANKING_FALLBACKS,
            "Rankings answered by the popularity fallback, by reason",
            "reason",
        )
        self.model_version = families.gauge(
            metrics.RANKING_MODEL_VERSION, "Model version serving requests (0: none READY)"
        )
