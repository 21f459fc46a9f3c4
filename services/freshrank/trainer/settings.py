"""Typed settings of the trainer (flags > ``FRESHRANK_*`` env > defaults).

Env names are a contract with the operator's renderer (``FRESHRANK_PORT``,
``FRESHRANK_QUALITY_METRIC`` ...) and the local stack.
"""

from __future__ import annotations

import dataclasses

from freshrank.core.settings import CommonSettings, host_port, opt

__all__ = ["DEVICES", "QUALITY_METRICS", "TrainerSettings"]

QUALITY_METRICS = ("hr@10", "ndcg@10", "hr@10_full", "ndcg@10_full")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerSettings(CommonSettings):
    host: str = opt("0.0.0.0", "address the health/readiness/metrics endpoint binds")
    port: int = opt(8082, "health/readiness/metrics port")
    model_repository: str = opt("models", "Triton model repository the trainer exports into")
    checkpoint_dir: str = opt("checkpoints", "directory of the trainer checkpoint")
    triton_url: str = opt("127.0.0.1:8000", "Triton HTTP host:port; empty: export without loading")
    triton_live: bool = opt(
        False,
        "publish to '<model>-live', the one Python-backend model that serves every version in "
        "place (the embedded Triton); off: each version is a Triton model version",
    )
    # Triton's control APIs answer only callers with this key (core.triton_auth); the operator
    # sets it from the <name>-triton-admin Secret.
    triton_admin_key: str = dataclasses.field(
        default="",
        repr=False,
        metadata={"help": "key for Triton's restricted model-control API; empty: none sent"},
    )
    # Model and learner.
    architecture: str = opt("sasrec", "model architecture (see freshrank.model.registry)")
    dim: int = opt(32, "embedding dimension")
    history_len: int = opt(20, "user history length fed to the model")
    num_users: int = opt(100_000, "user embedding rows (incl. the padding row)")
    num_items: int = opt(100_000, "item embedding rows (incl. the padding row)")
    learning_rate: float = opt(0.0, "dense learning rate; 0 keeps the learner's default")
    sparse_learning_rate: float = opt(0.0, "embedding learning rate; 0: the learner's default")
    device: str = opt("auto", "'auto' (CUDA when present), 'cpu' or 'cuda'")
    seed: int = opt(0, "random seed of the learner")
    # Stream.
    batch_size: int = opt(256, "events per micro-batch")
    poll_timeout_s: float = opt(0.2, "longest wait for a micro-batch to fill")
    checkpoint_interval_s: float = opt(5.0, "seconds between checkpoints (and Kafka commits)")
    checkpoint_time_share: float = opt(
        0.1, "most of the time spent writing checkpoints (stretches the interval for big states)"
    )
    dedupe_window: int = opt(
        100_000, "event ids remembered to drop duplicates (producer retries); 0: off"
    )
    # Export.
    export_interval_s: float = opt(30.0, "seconds between exports")
    export_every_events: int = opt(0, "also export after this many new events; 0: time only")
    keep_versions: int = opt(3, "model versions kept in the repository (>= 2)")
    manifest_keep: int = opt(100, "export records kept in manifest.json (>= keep_versions)")
    watch_s: float = opt(1.0, "how often to check that Triton serves the latest good version")
    ready_timeout_s: float = opt(120.0, "how long to wait for Triton to report a version READY")
    # Quality gate (skips an export, never stops training).
    quality_metric: str = opt("ndcg@10", "prequential metric the gate watches")
    min_events: int = opt(1000, "no export before this many events are trained")
    quality_floor: float = opt(0.0, "no export while the rolling metric is below this")
    max_regression: float = opt(
        0.05, "no export when the candidate trails the served version by more than this"
    )
    gate_sample: int = opt(64, "events per batch the served version is scored on for the gate")
    debug_ledger: bool = opt(False, "keep every trained event id in the checkpoint (tests)")

    def __post_init__(self) -> None:
        if self.quality_metric not in QUALITY_METRICS:
            raise ValueError(f"quality_metric must be one of {QUALITY_METRICS}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}")
        if self.batch_size < 1 or self.keep_versions < 2:
            raise ValueError("need batch_size >= 1 and keep_versions >= 2")
        if self.export_interval_s <= 0 or self.checkpoint_interval_s < 0:
            raise ValueError("need export_interval_s > 0 and checkpoint_interval_s >= 0")
        if not 0 < self.checkpoint_time_share <= 1 or self.dedupe_window < 0:
            raise ValueError("need 0 < checkpoint_time_share <= 1 and dedupe_window >= 0")
        if self.manifest_keep < self.keep_versions or self.watch_s <= 0:
            raise ValueError("need manifest_keep >= keep_versions and watch_s > 0")

    @property
    def group(self) -> str:
        return f"{self.name}-trainer"

    @property
    def triton_host_port(self) -> str:
        """``triton_url`` without a scheme (tritonclient wants host:port)."""
        return host_port(self.triton_url)
