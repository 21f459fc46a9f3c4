"""The trainer's Prometheus metrics (served on /metrics of the trainer's port, 8082).

Three gauges are a contract with the operator (``freshrank_operator.observe``): the served
model version, the last export time and the ingest time of the newest event the served
version covers (the operator reports ``now - that`` as the deployment's freshness).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FRESHNESS_BUCKETS", "TrainerMetrics"]

FRESHNESS_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_trained = Counter(
            "freshrank_trainer_events_trained_total", "events trained on", registry=registry
        )
        self.events_dead_lettered = Counter(
            "freshrank_trainer_events_dead_lettered_total",
            "malformed events skipped (the feature ingester dead-letters each one)",
            registry=registry,
        )
        self.events_duplicate = Counter(
            "freshrank_trainer_events_duplicate_total",
            "events skipped because their event id was already trained on (producer retries)",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "freshrank_trainer_batch_seconds",
            "test-then-train time of one micro-batch",
            registry=registry,
            buckets=_STEP_BUCKETS,
        )
        self.prequential = Gauge(
            "freshrank_trainer_prequential",
            "rolling prequential metric (scored before training on the events)",
            ["metric"],
            registry=registry,
        )
        self.checkpoints = Counter(
            "freshrank_trainer_checkpoints_total", "durable checkpoints written", registry=registry
        )
        self.checkpoint_seconds = Histogram(
            "freshrank_trainer_checkpoint_seconds",
            "time to write one checkpoint",
            registry=registry,
            buckets=_STEP_BUCKETS,
        )
        self.exports = Counter(
            "freshrank_trainer_exports_total",
            "export attempts by outcome (ok, skipped_quality, skipped_min_events, failed)",
            ["outcome"],
            registry=registry,
        )
        self.freshness = Histogram(
            "freshrank_trainer_freshness_seconds",
            "newest covered event's Kafka ingest time -> its model version READY on Triton",
            registry=registry,
            buckets=FRESHNESS_BUCKETS,
        )
        self.model_version = Gauge(
            "freshrank_trainer_model_version", "newest version READY on Triton", registry=registry
        )
        self.last_export = Gauge(
            "freshrank_trainer_last_export_timestamp_seconds",
            "wall clock when the newest version became READY",
            registry=registry,
        )
        self.last_exported_event = Gauge(
            "freshrank_trainer_last_exported_event_timestamp_seconds",
            "Kafka ingest time of the newest event the served version covers",
            registry=registry,
        )
        self.ids = Gauge(
            "freshrank_trainer_ids", "ID-map statistics (known, evictions...)", ["stat"],
            registry=registry,
        )  # fmt: skip

    def set_rolling(self, rolling: Mapping[str, float]) -> None:
        for name, value in rolling.items():
            self.prequential.labels(metric=name).set(value)

    def set_ids(self, stats: Mapping[str, int]) -> None:
        for name, value in stats.items():
            self.ids.labels(stat=name).set(value)
