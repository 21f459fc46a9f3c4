"""The feature service's ingest and store-health metrics, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from freshrank.core.contracts import metrics
from freshrank.feature.breaker import CircuitBreaker
from freshrank.feature.ingest import Ingester

__all__ = ["IngestMetrics"]


class IngestMetrics(Collector):
    """Counters of the ingester (absent when ingest is off) and the read breaker's state."""

    def __init__(self, ingester: Ingester | None, breaker: CircuitBreaker) -> None:
        self.ingester = ingester
        self.breaker = breaker

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "freshrank_feature_store_circuit_open",
            "1 while reads fail fast because the feature store is down",
            value=float(self.breaker.is_open),
        )
        yield CounterMetricFamily(
            "freshrank_feature_store_circuit_opened",
            "times the read circuit breaker opened",
            value=self.breaker.opened,
        )
        ingester = self.ingester
        if ingester is None:
            return
        yield CounterMetricFamily(
            metrics.FEATURE_EVENTS_APPLIED, "events applied", value=ingester.applied_events
        )
        yield CounterMetricFamily(
            metrics.FEATURE_EVENTS_DEAD_LETTERED,
            "messages sent to the dead-letter topic (contract violations and refused events)",
            value=ingester.dead_lettered,
        )
        yield CounterMetricFamily(
            "freshrank_feature_events_refused",
            "events the feature store refused (dead-lettered)",
            value=ingester.refused,
        )
        yield GaugeMetricFamily(
            "freshrank_feature_ingest_stuck",
            "1 while ingest retries a feature store outage",
            value=float(ingester.stuck),
        )
