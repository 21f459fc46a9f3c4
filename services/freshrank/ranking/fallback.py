"""Popularity ranking: what callers get when the model cannot answer (flagged ``fallback``).

Popular items come from the feature service (decayed popularity), refreshed in the background
and kept as ready-made arrays. Before the first refresh succeeds, the model's own known items,
most recently trained first, stand in. With candidates, they are ordered by the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrank.ranking.features import PopularItem
from freshrank.ranking.model_state import ModelState

__all__ = ["PopularityFallback", "top_k"]


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, best first (ties: lower index first)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k < scores.shape[0]:
        head = np.argpartition(-scores, k - 1)[:k]
    else:
        head = np.arange(scores.shape[0])
    best_first: npt.NDArray[np.intp] = head[np.lexsort((head, -scores[head]))]
    return best_first


class PopularityFallback:
    def __init__(self) -> None:
        self._ids: list[str] = []
        self._scores: list[float] = []
        self._score_of: dict[str, float] = {}
        self.generation = 0  # bumps on every update: retrieval caches key on it

    @property
    def popular_ids(self) -> Sequence[str]:
        return self._ids

    def update(self, items: Sequence[PopularItem]) -> None:
        ordered = sorted(items, key=lambda pair: -pair[1])
        self._ids = [item for item, _ in ordered]
        self._scores = [score for _, score in ordered]
        self._score_of = dict(ordered)
        self.generation += 1

    def rank(
        self, candidates: Sequence[str] | None, k: int, model: ModelState | None
    ) -> tuple[Sequence[str], Sequence[float]]:
        """The top ``k`` of ``candidates`` (or of all popular items) by popularity."""
        if candidates is None:
            if self._ids:
                return self._ids[:k], self._scores[:k]
            return self._recent_items(k, model)
        scores = np.fromiter(
            map(self._score_of.get, candidates, repeat(0.0)),
            dtype=np.float64,
            count=len(candidates),
        )
        if not self._score_of and model is not None:
            # No popularity known yet: prefer items the model saw most recently.
            scores = -model.recency_ranks(candidates).astype(np.float64)
        order = top_k(scores, k)
        return [candidates[i] for i in order], [float(scores[i]) for i in order]

    @staticmethod
    def _recent_items(k: int, model: ModelState | None) -> tuple[Sequence[str], Sequence[float]]:
        if model is None:
            return [], []
        items: list[str] = model.known_items[:k].tolist()
        return items, [1.0 / (1 + rank) for rank in range(len(items))]
