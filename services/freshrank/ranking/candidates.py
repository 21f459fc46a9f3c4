"""Retrieval when the caller sends no candidates: popular items the model knows, then the
model's other known items (most recently trained first), capped at ``size``.

The result is cached per (model version, popularity generation), so the hot path reuses the
same ID and row arrays until a new model or a new popularity snapshot arrives.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from freshrank.ranking.fallback import PopularityFallback
from freshrank.ranking.model_state import ModelState

__all__ = ["Retrieval"]

Candidates = tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]


class Retrieval:
    def __init__(self, fallback: PopularityFallback, size: int) -> None:
        self._fallback = fallback
        self._size = size
        self._key: tuple[int, int] | None = None
        self._cached: Candidates | None = None

    def candidates(self, model: ModelState) -> Candidates:
        """(item IDs, their rows) to score for a request without candidates."""
        key = (model.version, self._fallback.generation)
        if self._key != key or self._cached is None:
            self._cached = self._build(model)
            self._key = key
        return self._cached

    def _build(self, model: ModelState) -> Candidates:
        wanted = list(self._fallback.popular_ids)
        known = model.items.contains(wanted).tolist() if wanted else []
        popular = [i for i, ok in zip(wanted, known, strict=True) if ok][: self._size]
        chosen = dict.fromkeys(popular)
        for item in model.known_items.tolist():
            if len(chosen) >= self._size:
                break
            chosen.setdefault(item)
        ids = np.array(list(chosen), dtype=object)
        return ids, model.item_rows(ids.tolist())
