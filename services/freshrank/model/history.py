"""Per-user recent items, kept by the trainer from the stream itself.

One int64 row per user-embedding row, most recent item first, padded with row 0: the same
layout the ranking service sends to the model (``history_rows``), so a model trains on
what it is served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from freshrank.model.ids import PADDING_ROW

__all__ = ["UserHistories"]

Rows = npt.NDArray[np.int64]


class UserHistories:
    """A [num_users, length] table of item rows, newest in column 0."""

    def __init__(self, num_users: int, length: int) -> None:
        if length < 1:
            raise ValueError("history length must be >= 1")
        self.length = length
        self.table: Rows = np.full((num_users, length), PADDING_ROW, dtype=np.int64)

    def get(self, user_rows: Rows) -> Rows:
        """Histories of ``user_rows`` (a copy; row 0, the unknown user, has none)."""
        return self.table[user_rows].copy()

    def before_each(self, user_rows: Rows, item_rows: Rows, *, record: bool = True) -> Rows:
        """History each event saw *before* it happened, recording the events in order.

        A user with several events in one batch sees the earlier ones, as a live feature
        store would. Events of unknown users or items (row 0) are not recorded; with
        ``record=False`` the table is left as it was.
        """
        out = np.empty((len(user_rows), self.length), dtype=np.int64)
        table: Rows | dict[int, Rows] = self.table
        if not record:
            table = {user: self.table[user].copy() for user in set(user_rows.tolist())}
        for index, (user, item) in enumerate(
            zip(user_rows.tolist(), item_rows.tolist(), strict=True)
        ):
            out[index] = table[user]
            if user != PADDING_ROW and item != PADDING_ROW:
                row = table[user]
                row[1:] = row[:-1].copy()
                row[0] = item
        return out

    def reset_users(self, user_rows: Sequence[int]) -> None:
        """Forget evicted users (their rows now belong to new IDs)."""
        if len(user_rows):
            self.table[np.asarray(user_rows, dtype=np.int64)] = PADDING_ROW

    def drop_items(self, item_rows: Sequence[int]) -> None:
        """Remove evicted items from every history, keeping the rest in order."""
        if not len(item_rows):
            return
        stale = np.isin(self.table, np.asarray(item_rows, dtype=np.int64))
        affected = np.flatnonzero(stale.any(axis=1))
        for user in affected.tolist():
            kept = self.table[user][~stale[user]]
            self.table[user] = PADDING_ROW
            self.table[user, : len(kept)] = kept
