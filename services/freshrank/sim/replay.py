"""Replay an event iterator into Kafka at a chosen rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import EventProducer

__all__ = ["replay"]


def replay(
    events: Iterable[InteractionEvent],
    producer: EventProducer,
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
) -> int:
    """Produce every event (``rate`` events/s, or as fast as possible); returns the count."""
    start = time.monotonic()
    sent = 0
    for event in events:
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        producer.send(event)
        sent += 1
        if on_progress is not None and sent % progress_every == 0:
            on_progress(sent)
    producer.flush()
    if on_progress is not None:
        on_progress(sent)
    return sent
