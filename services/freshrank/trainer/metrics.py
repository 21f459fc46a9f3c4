"""The trainer's Prometheus metrics (served on /metrics of the trainer's port, 8082).

Names come from ``freshrank.core.contracts.metrics``. Three gauges are a contract with the
operator (``freshrank_operator.observe``): the served
model version, the last export time and the ingest time of the newest event the served
version covers (the operator reports ``now - that`` as the deployment's freshness).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from freshrank.core.contracts import metrics
from freshrank.core.metric_families import MetricFamilies

__all__ = ["FRESHNESS_BUCKETS", "TrainerMetrics"]

FRESHNESS_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        family = MetricFamilies(registry)
        self.events_trained = family.counter(metrics.TRAINER_EVENTS_TRAINED, "events trained on")
        self.events_dead_lettered = family.counter(
            metrics.TRAINER_EVENTS_DEAD_LETTERED,
            "malformed events skipped (the feature ingester dead-letters each one)",
        )
        self.events_duplicate = family.counter(
            metrics.TRAINER_EVENTS_DUPLICATE,
            "events skipped because their event id was already trained on (producer retries)",
        )
        self.batch_seconds = family.histogram(
            metrics.TRAINER_BATCH_SECONDS,
            "test-then-train time of one micro-batch",
            buckets=_STEP_BUCKETS,
        )
        self.prequential = family.gauge(
            metrics.TRAINER_PREQUENTIAL,
            "rolling prequential metric (scored before training on the events)",
            "metric",
        )
        self.checkpoints = family.counter(
            metrics.TRAINER_CHECKPOINTS, "durable checkpoints written"
        )
        self.checkpoint_seconds = family.histogram(
            metrics.TRAINER_CHECKPOINT_SECONDS,
            "time to write one checkpoint",
            buckets=_STEP_BUCKETS,
        )
        self.exports = family.counter(
            metrics.TRAINER_EXPORTS,
            "export attempts by outcome (ok, skipped_quality, skipped_min_events, failed)",
            "outcome",
        )
        self.freshness = family.histogram(
            metrics.TRAINER_FRESHNESS,
            "newest covered event's Kafka ingest time -> its model version READY on Triton",
            buckets=FRESHNESS_BUCKETS,
        )
        self.model_version = family.gauge(
            metrics.TRAINER_MODEL_VERSION_GAUGE, "newest version READY on Triton"
        )
        self.last_export = family.gauge(
            metrics.TRAINER_LAST_EXPORT_GAUGE, "wall clock when the newest version became READY"
        )
        self.last_exported_event = family.gauge(
            metrics.TRAINER_LAST_EVENT_GAUGE,
            "Kafka ingest time of the newest event the served version covers",
        )
        self.ids = family.gauge(
            metrics.TRAINER_IDS, "ID-map statistics (known, evictions...)", "stat"
        )
        self.model_stats = family.gauge(
            metrics.TRAINER_MODEL_STATS,
            "what the model chose online (knn_weight: the weight of sasrec's kNN term)",
            "stat",
        )

    def set_rolling(self, rolling: Mapping[str, float]) -> None:
        for name, value in rolling.items():
            self.prequential.labels(metric=name).set(value)

    def set_model_stats(self, stats: Mapping[str, float]) -> None:
        for name, value in stats.items():
            self.model_stats.labels(stat=name).set(value)

    def set_ids(self, stats: Mapping[str, int]) -> None:
        for name, value in stats.items():
            self.ids.labels(stat=name).set(value)
