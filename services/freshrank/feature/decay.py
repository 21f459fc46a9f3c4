"""Exponentially decayed counters in event time: a value plus the time it was last brought to."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["decay", "fold", "merge"]


def decay(value: float, from_ms: int, to_ms: int, half_life_ms: float) -> float:
    """``value`` seen at ``from_ms`` as of ``to_ms`` (never grows: late reads do not inflate)."""
    if to_ms <= from_ms:
        return value
    return value * math.pow(0.5, (to_ms - from_ms) / half_life_ms)


def merge(
    value: float, at_ms: int, other: float, other_at_ms: int, half_life_ms: float
) -> tuple[float, int]:
    """Sum two decayed counters, referenced to the later of their times."""
    if other_at_ms >= at_ms:
        return decay(value, at_ms, other_at_ms, half_life_ms) + other, other_at_ms
    return value + decay(other, other_at_ms, at_ms, half_life_ms), at_ms


def fold(timestamps_ms: Iterable[int], half_life_ms: float) -> tuple[float, int]:
    """The decayed count of events at ``timestamps_ms``, referenced to the latest of them."""
    times = list(timestamps_ms)
    latest = max(times)
    return sum(math.pow(0.5, (latest - t) / half_life_ms) for t in times), latest
