"""The settings of the three services, declared here, at the bottom, for two readers.

The services read them (``freshrank.feature.settings`` and the others re-export their class);
the operator's renderer derives each pod's env var names from the same fields
(``core.settings.settings_env``), so a renamed or removed setting breaks the renderer's tests,
never a running pod. A setting two roles share comes from a mixin of ``core.settings``; the
bases are listed most specific first, so ``--help`` lists the common settings first.
"""

from __future__ import annotations

import typing
from typing import Literal, Self

from pydantic import SecretStr, model_validator

from freshrank.core.contracts.quality import QualityMetric
from freshrank.core.settings import (
    CommonSettings,
    HistorySettings,
    ModelRepositorySettings,
    ServerSettings,
    TritonSettings,
    host_port,
    opt,
    secret,
)

__all__ = [
    "ARCHITECTURE_NAMES",
    "DEVICES",
    "QUALITY_METRICS",
    "SCORERS",
    "TRITON_PROTOCOLS",
    "Architecture",
    "Device",
    "FeatureSettings",
    "ModelSettings",
    "QualityMetric",
    "RankingSettings",
    "Scorer",
    "TrainerSettings",
    "TritonProtocol",
]

# The names freshrank.model.registry builds (tests/model checks they agree).
Architecture = Literal["sasrec", "din", "mf"]
Device = Literal["auto", "cpu", "cuda"]
Scorer = Literal["triton", "torch"]
TritonProtocol = Literal["http", "grpc"]
ARCHITECTURE_NAMES: tuple[str, ...] = typing.get_args(Architecture)
QUALITY_METRICS: tuple[str, ...] = tuple(metric.value for metric in QualityMetric)
DEVICES: tuple[str, ...] = typing.get_args(Device)
SCORERS: tuple[str, ...] = typing.get_args(Scorer)
TRITON_PROTOCOLS: tuple[str, ...] = typing.get_args(TritonProtocol)


class ModelSettings(HistorySettings):
    """The model's shape (``freshrank.model.ModelConfig.from_settings`` builds it from these)."""

    architecture: Architecture = opt("sasrec", "model architecture (freshrank.model.registry)")
    dim: int = opt(32, "embedding dimension", ge=1)
    views: int = opt(2, "sasrec: item-table views (an ensemble sharing the layers)", ge=1, le=8)
    neighbours: int = opt(
        100, "sasrec: users whose items vote in the user-kNN term (0: no term)", ge=0, le=1000
    )
    num_users: int = opt(100_000, "user embedding rows (incl. the padding row)", ge=2)
    num_items: int = opt(100_000, "item embedding rows (incl. the padding row)", ge=2)


class FeatureSettings(
    HistorySettings,
    ServerSettings,
    CommonSettings,
    defaults={"host": "127.0.0.1", "port": 8081, "history_len": 50},
):
    """The feature service: Kafka ingest into the SQL store, the feature API."""

    database_url: SecretStr = opt(
        SecretStr("sqlite+aiosqlite:///freshrank-features.db"),
        "SQLAlchemy async URL (postgresql+psycopg://user:password@host:5432/db in production)",
    )
    db_schema: str = opt("", "PostgreSQL schema to use (created if missing); empty = default")
    half_life_s: float = opt(
        86400.0, "half-life of decayed counters, in event time (seconds)", gt=0
    )
    cache_size: int = opt(100_000, "entries in the in-process read-through cache", ge=0)
    cache_ttl_s: float = opt(5.0, "seconds a cached feature set may be served", ge=0)
    ingest_batch: int = opt(1000, "max events per ingest transaction", ge=1)
    ingest: bool = opt(True, "consume <name>.events (false: API only)")
    pool_size: int = opt(8, "database connections in the pool", ge=1)
    processed_retention_s: float = opt(
        7 * 86400.0,
        "stream time (s) event ids are remembered for dedupe; must exceed the longest"
        " redelivery delay (0 = forever)",
        ge=0,
    )

    @property
    def consumer_group(self) -> str:
        return f"{self.name}-features"

    @property
    def half_life_ms(self) -> float:
        return self.half_life_s * 1000.0


class TrainerSettings(
    ModelSettings,
    TritonSettings,
    ModelRepositorySettings,
    ServerSettings,
    CommonSettings,
    defaults={"port": 8082},
):
    """The trainer: Kafka stream -> prequential eval -> fine-tune -> export -> Triton load."""

    checkpoint_dir: str = opt("checkpoints", "directory of the trainer checkpoint")
    # Triton's control APIs answer only callers with this key (core.triton_auth); the operator
    # sets it from the <name>-triton-admin Secret.
    triton_admin_key: SecretStr = secret(
        "key for Triton's restricted model-control API; empty: none sent"
    )
    # Learner.
    learning_rate: float = opt(0.0, "dense learning rate; 0 keeps the learner's default", ge=0)
    sparse_learning_rate: float = opt(
        0.0, "embedding learning rate; 0: the learner's default", ge=0
    )
    device: Device = opt("auto", "'auto' (CUDA when present), 'cpu' or 'cuda'")
    seed: int = opt(0, "random seed of the learner")
    # Stream.
    batch_size: int = opt(256, "events per micro-batch", ge=1)
    poll_timeout_s: float = opt(0.2, "longest wait for a micro-batch to fill", ge=0)
    checkpoint_interval_s: float = opt(5.0, "seconds between checkpoints (and Kafka commits)", ge=0)
    checkpoint_time_share: float = opt(
        0.1,
        "most of the time spent writing checkpoints (stretches the interval for big states)",
        gt=0,
        le=1,
    )
    dedupe_window: int = opt(
        100_000, "event ids remembered to drop duplicates (producer retries); 0: off", ge=0
    )
    # Export.
    export_interval_s: float = opt(30.0, "seconds between exports", gt=0)
    export_every_events: int = opt(0, "also export after this many new events; 0: time only", ge=0)
    keep_versions: int = opt(3, "model versions kept in the repository (>= 2)", ge=2)
    manifest_keep: int = opt(100, "export records kept in manifest.json (>= keep_versions)")
    watch_s: float = opt(1.0, "how often to check that Triton serves the latest good version", gt=0)
    ready_timeout_s: float = opt(
        120.0, "how long to wait for Triton to report a version READY", gt=0
    )
    # Quality gate (skips an export, never stops training).
    quality_metric: QualityMetric = opt(
        QualityMetric.NDCG_AT_10, "prequential metric the gate watches"
    )
    min_events: int = opt(1000, "no export before this many events are trained", ge=0)
    quality_floor: float = opt(0.0, "no export while the rolling metric is below this")
    max_regression: float = opt(
        0.05, "no export when the candidate trails the served version by more than this", ge=0
    )
    gate_sample: int = opt(
        64, "events per batch the served version is scored on for the gate", ge=0
    )
    debug_ledger: bool = opt(False, "keep every trained event id in the checkpoint (tests)")

    @model_validator(mode="after")
    def _manifest_keeps_the_versions(self) -> Self:
        if self.manifest_keep < self.keep_versions:
            raise ValueError("need manifest_keep >= keep_versions")
        return self

    @property
    def group(self) -> str:
        return f"{self.name}-trainer"

    @property
    def triton_host_port(self) -> str:
        """``triton_url`` without a scheme (tritonclient wants host:port)."""
        return host_port(self.triton_url)


class RankingSettings(
    TritonSettings,
    ModelRepositorySettings,
    ServerSettings,
    CommonSettings,
    defaults={"port": 8080},
):
    """The ranking API in front of Triton (and the feature service)."""

    scorer: Scorer = opt(
        "triton", "who scores: 'triton' or 'torch' (model.pt in-process, no Triton)"
    )
    device: Literal["cpu", "cuda"] = opt(
        "cpu", "where the in-process scorer ('torch') runs: 'cpu' or 'cuda'"
    )
    triton_protocol: TritonProtocol = opt("http", "Triton protocol: 'http' or 'grpc'")
    feature_url: str = opt("http://127.0.0.1:8081", "feature service base URL; empty disables it")
    default_k: int = opt(10, "items returned when the request gives no k", ge=1)
    max_k: int = opt(1000, "largest k a request may ask for", ge=1)
    max_candidates: int = opt(2000, "most candidates a request may send", ge=1)
    retrieval_size: int = opt(500, "candidates retrieved when the request sends none", ge=1)
    triton_deadline_ms: float = opt(
        50.0, "deadline for one ranking's Triton call, retries included", gt=0
    )
    feature_deadline_ms: float = opt(
        20.0, "deadline for one feature lookup, retries included", gt=0
    )
    retries: int = opt(1, "extra attempts on a connection error, within the deadline", ge=0)
    breaker_failures: int = opt(5, "consecutive Triton failures that open the circuit", ge=1)
    breaker_open_s: float = opt(
        1.0, "seconds an open circuit skips Triton before trying again", ge=0
    )
    breaker_failing_s: float = opt(
        0.5,
        "the failures must span this long to open the circuit (one slow moment does not)",
        ge=0,
    )
    model_poll_s: float = opt(1.0, "how often to look for a newer READY model version", gt=0)
    popular_refresh_s: float = opt(5.0, "how often to refresh the popular items (fallback)", gt=0)

    @model_validator(mode="after")
    def _default_k_fits(self) -> Self:
        if self.default_k > self.max_k:
            raise ValueError("need default_k <= max_k")
        return self
