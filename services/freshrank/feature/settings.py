"""Feature service settings (flags and ``FRESHRANK_*`` env vars)."""

from __future__ import annotations

import dataclasses

from freshrank.core.settings import CommonSettings, opt

__all__ = ["FeatureSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSettings(CommonSettings):
    database_url: str = opt(
        "sqlite+aiosqlite:///freshrank-features.db",
        "SQLAlchemy async URL (postgresql+psycopg://user@host:5432/db in production)",
    )
    db_schema: str = opt("", "PostgreSQL schema to use (created if missing); empty = default")
    host: str = opt("127.0.0.1", "API bind address")
    port: int = opt(8081, "API port")
    history_length: int = opt(50, "items kept per user history (most recent first)")
    half_life_s: float = opt(86400.0, "half-life of decayed counters, in event time (seconds)")
    cache_size: int = opt(100_000, "entries in the in-process read-through cache")
    cache_ttl_s: float = opt(5.0, "seconds a cached feature set may be served")
    ingest_batch: int = opt(1000, "max events per ingest transaction")
    ingest: bool = opt(True, "consume <name>.events (false: API only)")
    pool_size: int = opt(8, "database connections in the pool")
    processed_retention_s: float = opt(
        7 * 86400.0,
        "stream time (s) event ids are remembered for dedupe; must exceed the longest"
        " redelivery delay (0 = forever)",
    )

    @property
    def consumer_group(self) -> str:
        return f"{self.name}-features"

    @property
    def half_life_ms(self) -> float:
        return self.half_life_s * 1000.0
