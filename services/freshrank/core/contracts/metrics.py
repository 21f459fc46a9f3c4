"""Prometheus metric names read across a boundary: by the operator (status, autoscaling), the
Prometheus adapter rules of the chart, the demo and the benchmarks. The service that exports a
metric registers it under this name; readers look it up by the same constant.

Counters are named with their ``_total`` sample name (prometheus_client strips and re-adds the
suffix), so one string serves the writer and the reader of the exposition text.
"""

from __future__ import annotations

__all__ = [
    "FEATURE_EVENTS_APPLIED",
    "FEATURE_EVENTS_DEAD_LETTERED",
    "RANKING_FALLBACKS",
    "RANKING_MODEL_VERSION",
    "REQUEST_LATENCY",
    "TRAINER_BATCH_SECONDS",
    "TRAINER_CHECKPOINTS",
    "TRAINER_CHECKPOINT_SECONDS",
    "TRAINER_EVENTS_DEAD_LETTERED",
    "TRAINER_EVENTS_DUPLICATE",
    "TRAINER_EVENTS_TRAINED",
    "TRAINER_EXPORTS",
    "TRAINER_FRESHNESS",
    "TRAINER_GAUGES",
    "TRAINER_IDS",
    "TRAINER_LAST_EVENT_GAUGE",
    "TRAINER_LAST_EXPORT_GAUGE",
    "TRAINER_MODEL_STATS",
    "TRAINER_MODEL_VERSION_GAUGE",
    "TRAINER_PREQUENTIAL",
    "labelled",
]

# Every HTTP service (core.http): request latency by route, method and status. The operator's
# autoscaler reads it for routes.RANK.
REQUEST_LATENCY = "freshrank_http_request_duration_seconds"

# Trainer (port 8082).
TRAINER_EVENTS_TRAINED = "freshrank_trainer_events_trained_total"
TRAINER_EVENTS_DEAD_LETTERED = "freshrank_trainer_events_dead_lettered_total"
TRAINER_EVENTS_DUPLICATE = "freshrank_trainer_events_duplicate_total"
TRAINER_BATCH_SECONDS = "freshrank_trainer_batch_seconds"
TRAINER_PREQUENTIAL = "freshrank_trainer_prequential"  # label metric: quality.ROLLING_NAMES
TRAINER_CHECKPOINTS = "freshrank_trainer_checkpoints_total"
TRAINER_CHECKPOINT_SECONDS = "freshrank_trainer_checkpoint_seconds"
TRAINER_EXPORTS = "freshrank_trainer_exports_total"
TRAINER_FRESHNESS = "freshrank_trainer_freshness_seconds"
TRAINER_IDS = "freshrank_trainer_ids"
TRAINER_MODEL_STATS = "freshrank_trainer_model_stats"  # label stat: what the model chose online
# The three gauges the operator turns into status.modelVersion, lastExportTime, freshnessSeconds.
TRAINER_MODEL_VERSION_GAUGE = "freshrank_trainer_model_version"
TRAINER_LAST_EXPORT_GAUGE = "freshrank_trainer_last_export_timestamp_seconds"
TRAINER_LAST_EVENT_GAUGE = "freshrank_trainer_last_exported_event_timestamp_seconds"
TRAINER_GAUGES = (TRAINER_MODEL_VERSION_GAUGE, TRAINER_LAST_EXPORT_GAUGE, TRAINER_LAST_EVENT_GAUGE)

# Feature service (port 8081).
FEATURE_EVENTS_APPLIED = "freshrank_feature_events_applied_total"
FEATURE_EVENTS_DEAD_LETTERED = "freshrank_feature_events_dead_lettered_total"

# Ranking service (port 8080).
RANKING_FALLBACKS = "freshrank_ranking_fallback_total"  # label reason
RANKING_MODEL_VERSION = "freshrank_ranking_model_version"


def labelled(name: str, **labels: str) -> str:
    """A sample's key as the text format writes it: ``name{label="value",...}``."""
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"
