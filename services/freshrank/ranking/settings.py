"""Typed settings of the ranking service (flags > ``FRESHRANK_*`` env > defaults)."""

from __future__ import annotations

import dataclasses

from freshrank.core.settings import CommonSettings, opt

__all__ = ["SCORERS", "TRITON_PROTOCOLS", "RankingSettings"]

TRITON_PROTOCOLS = ("http", "grpc")
SCORERS = ("triton", "torch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankingSettings(CommonSettings):
    host: str = opt("0.0.0.0", "address the ranking API binds")
    port: int = opt(8080, "ranking API port")
    scorer: str = opt("triton", "who scores: 'triton' or 'torch' (model.pt in-process, no Triton)")
    device: str = opt("cpu", "where the in-process scorer ('torch') runs: 'cpu' or 'cuda'")
    triton_url: str = opt("127.0.0.1:8000", "Triton host:port (HTTP or gRPC port, no scheme)")
    triton_protocol: str = opt("http", "Triton protocol: 'http' or 'grpc'")
    triton_live: bool = opt(
        False,
        "score on '<model>-live', the one Python-backend model that serves every version in "
        "place (the embedded Triton); off: each version is a Triton model version",
    )
    feature_url: str = opt("http://127.0.0.1:8081", "feature service base URL; empty disables it")
    model_repository: str = opt("models", "Triton model repository (reads ids.json)")
    default_k: int = opt(10, "items returned when the request gives no k")
    max_k: int = opt(1000, "largest k a request may ask for")
    max_candidates: int = opt(2000, "most candidates a request may send")
    retrieval_size: int = opt(500, "candidates retrieved when the request sends none")
    triton_deadline_ms: float = opt(
        50.0, "deadline for one ranking's Triton call, retries included"
    )
    feature_deadline_ms: float = opt(20.0, "deadline for one feature lookup, retries included")
    retries: int = opt(1, "extra attempts on a connection error, within the deadline")
    breaker_failures: int = opt(5, "consecutive Triton failures that open the circuit")
    breaker_open_s: float = opt(1.0, "seconds an open circuit skips Triton before trying again")
    breaker_failing_s: float = opt(
        0.5, "the failures must span this long to open the circuit (one slow moment does not)"
    )
    model_poll_s: float = opt(1.0, "how often to look for a newer READY model version")
    popular_refresh_s: float = opt(5.0, "how often to refresh the popular items (fallback)")

    def __post_init__(self) -> None:
        if self.triton_protocol not in TRITON_PROTOCOLS:
            raise ValueError(f"triton_protocol must be one of {TRITON_PROTOCOLS}")
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}")
        if not 0 < self.default_k <= self.max_k:
            raise ValueError("need 0 < default_k <= max_k")
        if self.retries < 0 or self.retrieval_size < 1:
            raise ValueError("need retries >= 0 and retrieval_size >= 1")
