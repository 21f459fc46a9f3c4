"""Shared helpers for the feature-service tests (events, store snapshots, waits)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from freshrank.core.codec import EventType, InteractionEvent, make_event
from freshrank.feature.store import FeatureStore
from freshrank.v1 import features_pb2


def libpq_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def unique_schema() -> str:
    return f"ftest_{uuid.uuid4().hex[:12]}"


def event(
    n: int,
    user: str,
    item: str,
    ts: int,
    kind: EventType.ValueType = EventType.CLICK,
) -> InteractionEvent:
    return make_event(event_id=f"e{n}", user_id=user, item_id=item, type=kind, timestamp_ms=ts)


def stream(
    count: int, *, users: int = 7, items: int = 11, prefix: str = "s"
) -> list[InteractionEvent]:
    """A deterministic stream with interleaved users and items, one event per 10 ms."""
    kinds = [EventType.VIEW, EventType.CLICK, EventType.PURCHASE]
    return [
        make_event(
            event_id=f"{prefix}{i}",
            user_id=f"u{i % users}",
            item_id=f"i{(i * 3) % items}",
            type=kinds[i % 3],
            timestamp_ms=1_700_000_000_000 + i * 10,
        )
        for i in range(count)
    ]


async def snapshot(store: FeatureStore, events: list[InteractionEvent]) -> dict[str, Any]:
    """Everything the store says about the users and items in ``events``."""
    user_ids = sorted({e.user_id for e in events})
    item_ids = sorted({e.item_id for e in events})
    users = await store.users(user_ids)
    return {
        "users": {
            u: (
                r.event_count,
                round(r.decayed, 9),
                [(h.item_id, h.type, h.timestamp_ms) for h in history(r.history)],
            )
            for u, r in users.items()
        },
        "items": {
            i: (r.event_count, round(r.decayed, 9))
            for i, r in (await store.items(item_ids)).items()
        },
        "counts": await store.counts(),
    }


def history(blob: bytes) -> list[features_pb2.HistoryEntry]:
    return list(features_pb2.UserFeatures.FromString(blob).history)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 90.0) -> None:
    """Wait on progress: poll ``predicate`` until true; fail only after a generous deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("condition not reached")
