"""Which (user, item) pairs have happened: what evaluation must not count as a negative.

Kept as sorted int64 keys ``user_row * item_capacity + item_row`` in two levels: a large
sorted array and a small recent one merged into it when it grows past a fraction of the
large one, so adding a batch costs amortised O(batch) and a lookup is two binary searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["SeenPairs"]

Rows = npt.NDArray[np.int64]
_MERGE_FRACTION = 0.1


class SeenPairs:
    def __init__(self, item_capacity: int) -> None:
        self.item_capacity = item_capacity
        self._main: Rows = np.zeros(0, dtype=np.int64)
        self._recent: Rows = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._main) + len(self._recent)

    def add(self, user_rows: Rows, item_rows: Rows) -> None:
        keys = self._keys(user_rows, item_rows)
        keys = keys[(user_rows != 0) & (item_rows != 0)]
        self._recent = np.union1d(self._recent, keys)
        if len(self._recent) > _MERGE_FRACTION * len(self._main):
            self._main = np.union1d(self._main, self._recent)
            self._recent = np.zeros(0, dtype=np.int64)

    def contains(self, user_rows: Rows, item_rows: Rows) -> npt.NDArray[np.bool_]:
        """Elementwise: has ``user_rows`` met ``item_rows`` (broadcast shapes)?"""
        keys = self._keys(*np.broadcast_arrays(user_rows, item_rows))
        return _member(self._main, keys) | _member(self._recent, keys)

    def forget(self, users: Sequence[int], items: Sequence[int]) -> None:
        """Drop pairs of evicted rows (those rows now mean other IDs)."""
        if not len(users) and not len(items):
            return
        keys = np.union1d(self._main, self._recent)
        stale = np.isin(keys // self.item_capacity, np.asarray(users, dtype=np.int64))
        stale |= np.isin(keys % self.item_capacity, np.asarray(items, dtype=np.int64))
        self._main, self._recent = keys[~stale], np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        keys = np.union1d(self._main, self._recent)
        return {"item_capacity": self.item_capacity, "keys": torch.from_numpy(keys)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.item_capacity = int(state["item_capacity"])
        self._main = np.asarray(state["keys"], dtype=np.int64).copy()
        self._recent = np.zeros(0, dtype=np.int64)

    def _keys(self, user_rows: npt.ArrayLike, item_rows: npt.ArrayLike) -> Rows:
        keys: Rows = np.asarray(user_rows, dtype=np.int64) * self.item_capacity + np.asarray(
            item_rows, dtype=np.int64
        )
        return keys


def _member(sorted_keys: Rows, keys: Rows) -> npt.NDArray[np.bool_]:
    if not len(sorted_keys):
        return np.zeros(keys.shape, dtype=bool)
    index = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: npt.NDArray[np.bool_] = sorted_keys[index] == keys
    return found
