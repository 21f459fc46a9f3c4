"""Shared helpers for the feature-service tests: events, a running service, store snapshots
(waiting on progress is tests/waiting.py's)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from freshrank.core.codec import EventType, InteractionEvent, make_event
from freshrank.core.kafka import ensure_topics
from freshrank.embedded import free_port
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings
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


@contextlib.asynccontextmanager
async def running_service(
    bootstrap: str, settings: FeatureSettings, **overrides: object
) -> AsyncIterator[FeatureService]:
    """A started service on the broker at ``bootstrap`` (its topics created, a free port),
    ``settings`` with ``overrides``; stopped on the way out."""
    settings = settings.model_copy(
        update={"bootstrap_servers": bootstrap, "port": free_port(), **overrides}
    )
    ensure_topics(bootstrap, [settings.events_topic, settings.dlq_topic])
    service = FeatureService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def base_url(service: FeatureService) -> str:
    return f"http://127.0.0.1:{service.settings.port}"
