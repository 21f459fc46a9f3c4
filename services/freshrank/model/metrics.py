"""Ranking metrics for prequential evaluation: pure functions plus a rolling window.

A rank is 0-based: the number of competing candidates that score *at least* as high as the
true item. Ties count against the true item (pessimistic), so a model that scores everything
equally (untrained, or an unknown item on row 0) gets no credit for luck.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrank.core.contracts.quality import LOSS, ROLLING_NAMES, QualityMetric

__all__ = [
    "METRIC_NAMES",
    "RollingMetrics",
    "hit_rate_at_k",
    "ndcg_at_k",
    "ranks_of_true",
]

METRIC_NAMES = ROLLING_NAMES

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]


def ranks_of_true(
    true_scores: FloatArray, other_scores: FloatArray, valid: BoolArray | None = None
) -> npt.NDArray[np.int64]:
    """Rank of each row's true score among ``other_scores`` [B, C] (``valid`` masks slots)."""
    beaten_or_tied = other_scores >= true_scores[:, None]
    if valid is not None:
        beaten_or_tied &= valid
    ranks: npt.NDArray[np.int64] = beaten_or_tied.sum(axis=1).astype(np.int64)
    return ranks


def hit_rate_at_k(ranks: npt.NDArray[np.int64], k: int = 10) -> npt.NDArray[np.float64]:
    """1 where the true item is in the top ``k``, else 0 (per event)."""
    return (ranks < k).astype(np.float64)


def ndcg_at_k(ranks: npt.NDArray[np.int64], k: int = 10) -> npt.NDArray[np.float64]:
    """1 / log2(rank + 2) inside the top ``k``, else 0: one relevant item, so IDCG = 1."""
    gains = 1.0 / np.log2(ranks.astype(np.float64) + 2.0)
    return np.where(ranks < k, gains, 0.0)


@dataclasses.dataclass
class _Totals:
    events: int = 0
    hr: float = 0.0
    ndcg: float = 0.0
    full_events: int = 0
    hr_full: float = 0.0
    ndcg_full: float = 0.0
    loss_batches: int = 0
    loss: float = 0.0

    def add(self, other: _Totals) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class RollingMetrics:
    """Prequential metrics over (about) the last ``window`` events, and over the whole run.

    Batches enter whole and leave whole once the newer ones cover ``window`` events, so the
    window is the newest batches holding at least ``window`` events.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self._batches: collections.deque[_Totals] = collections.deque()
        self._window_events = 0
        self._total = _Totals()

    def add(
        self,
        *,
        hits: float,
        ndcg: float,
        events: int,
        hits_full: float,
        ndcg_full: float,
        full_events: int,
        loss: float | None,
    ) -> None:
        batch = _Totals(
            events=events,
            hr=hits,
            ndcg=ndcg,
            full_events=full_events,
            hr_full=hits_full,
            ndcg_full=ndcg_full,
            loss_batches=0 if loss is None else 1,
            loss=0.0 if loss is None else loss,
        )
        self._batches.append(batch)
        self._window_events += events
        self._total.add(batch)
        while (
            len(self._batches) > 1 and self._window_events - self._batches[0].events >= self.window
        ):
            self._window_events -= self._batches.popleft().events

    @property
    def rolling(self) -> dict[str, float]:
        # Summed afresh (a few dozen batches) so a resumed run reports bit-identical numbers.
        window = _Totals()
        for batch in self._batches:
            window.add(batch)
        return _as_dict(window)

    @property
    def total(self) -> dict[str, float]:
        return _as_dict(self._total)

    def state_dict(self) -> dict[str, object]:
        return {
            "window": self.window,
            "batches": [dataclasses.asdict(b) for b in self._batches],
            "total": dataclasses.asdict(self._total),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.window = int(state["window"])  # type: ignore[call-overload]
        batches = state["batches"]
        assert isinstance(batches, list)
        self._batches = collections.deque(_Totals(**b) for b in batches)
        self._window_events = sum(b.events for b in self._batches)
        total = state["total"]
        assert isinstance(total, dict)
        self._total = _Totals(**total)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _as_dict(totals: _Totals) -> dict[str, float]:
    return {
        QualityMetric.HR_AT_10: _ratio(totals.hr, totals.events),
        QualityMetric.NDCG_AT_10: _ratio(totals.ndcg, totals.events),
        QualityMetric.HR_AT_10_FULL: _ratio(totals.hr_full, totals.full_events),
        QualityMetric.NDCG_AT_10_FULL: _ratio(totals.ndcg_full, totals.full_events),
        LOSS: _ratio(totals.loss, totals.loss_batches),
        "events": float(totals.events),
    }
