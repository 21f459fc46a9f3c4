"""The ranking service's own Prometheus metrics (the request histogram comes from core.http)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from freshrank.core.contracts import metrics
from freshrank.core.http import LATENCY_BUCKETS

__all__ = ["RankingMetrics"]


class RankingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.scorer_latency = Histogram(
            "freshrank_triton_request_duration_seconds",
            "Model inference call latency (Triton, or in-process when scorer=torch)",
            ["scorer", "outcome"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.feature_latency = Histogram(
            "freshrank_feature_lookup_duration_seconds",
            "Feature service lookup latency",
            ["outcome"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.fallbacks = Counter(
            metrics.RANKING_FALLBACKS,
            "Rankings answered by the popularity fallback, by reason",
            ["reason"],
            registry=registry,
        )
        self.model_version = Gauge(
            metrics.RANKING_MODEL_VERSION,
            "Model version serving requests (0: none READY)",
            registry=registry,
        )
