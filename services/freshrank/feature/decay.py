"""Exponentially decayed counters in event time: a value plus the time it was last brought to."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["MAX_HALF_LIVES", "decay", "fold", "merge"]

# Decay stops at this many half-lives (a factor of 9e-302, still a normal double): a counter is
# at least 1 when stored, so the product never underflows, which PostgreSQL's power() and
# float multiplication raise as an error instead of returning 0.
MAX_HALF_LIVES = 1000.0


def halvings(elapsed_ms: float, half_life_ms: float) -> float:
    return min(elapsed_ms / half_life_ms, MAX_HALF_LIVES)


def decay(value: float, from_ms: int, to_ms: int, half_life_ms: float) -> float:
    """``value`` seen at ``from_ms`` as of ``to_ms`` (never grows: late reads do not inflate)."""
    if to_ms <= from_ms:
        return value
    return value * math.pow(0.5, halvings(to_ms - from_ms, half_life_ms))


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
    return sum(math.pow(0.5, halvings(latest - t, half_life_ms)) for t in times), latest
