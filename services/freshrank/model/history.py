"""Per-user recent items, kept by the trainer from the stream itself.

One int64 row per user-embedding row, most recent item first, padded with row 0: the same
layout the ranking service sends to the model (``history_rows``), so a model trains on
what it is served.

Events of one user with the same timestamp are simultaneous: none is history for another
(file or partition order must not decide what a model may look at). The table remembers,
per user, the newest timestamp it holds and how many of its head entries carry it, so a tie
that straddles two micro-batches is treated the same as one inside a batch.

Everything is vectorised over the batch (a sort by user and time, then gathers): no Python
loop per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from freshrank.model.ids import PADDING_ROW

__all__ = ["UserHistories", "compact_rows"]

Rows = npt.NDArray[np.int64]


class UserHistories:
    """A [num_users, length] table of item rows, newest in column 0."""

    def __init__(self, num_users: int, length: int) -> None:
        if length < 1:
            raise ValueError("history length must be >= 1")
        self.length = length
        self.table: Rows = np.full((num_users, length), PADDING_ROW, dtype=np.int64)
        # Newest timestamp in each row, and how many head entries share it (simultaneous).
        self.last_time: Rows = np.full(num_users, np.iinfo(np.int64).min, dtype=np.int64)
        self.head_ties: Rows = np.zeros(num_users, dtype=np.int64)

    def get(self, user_rows: Rows) -> Rows:
        """Histories of ``user_rows`` (a copy; row 0, the unknown user, has none)."""
        return self.table[user_rows].copy()

    def before_each(
        self,
        user_rows: Rows,
        item_rows: Rows,
        times: Rows | None = None,
        *,
        record: bool = True,
    ) -> Rows:
        """History each event saw *before* it happened, then record the batch.

        An event sees the user's events with a strictly earlier timestamp, earlier events
        of the same batch included (a live feature store has them; only the model lags one
        micro-batch). ``times=None`` orders the batch as given (every event after the
        previous one). Events of unknown users or items (row 0) are not recorded; with
        ``record=False`` the table is left as it was.
        """
        count = len(user_rows)
        if times is None:
            times = np.arange(count, dtype=np.int64) + _after(self.last_time)
        order = np.lexsort((np.arange(count), times, user_rows))
        users, stamps, items = user_rows[order], times[order], item_rows[order]
        first = np.r_[True, users[1:] != users[:-1]] if count else np.zeros(0, dtype=bool)
        group_start = np.maximum.accumulate(np.where(first, np.arange(count), 0))
        tie = ~first & (stamps == np.r_[stamps[:1], stamps[:-1]])
        tie_start = np.maximum.accumulate(np.where(~tie, np.arange(count), 0))
        earlier = np.where(users == PADDING_ROW, 0, tie_start - group_start)
        skip = np.where(stamps == self.last_time[users], self.head_ties[users], 0)
        sorted_out = self._gather(users, items, group_start, earlier, skip)
        out = np.empty_like(sorted_out)
        out[order] = sorted_out
        if record and count:
            self._record(users, items, stamps)
        return out

    def _gather(
        self, users: Rows, items: Rows, group_start: Rows, earlier: Rows, skip: Rows
    ) -> Rows:
        """Rows of ``earlier`` in-batch items (newest first), then the table minus ``skip``."""
        column = np.arange(self.length)[None, :]
        from_batch = column < earlier[:, None]
        batch_index = np.clip(group_start[:, None] + earlier[:, None] - 1 - column, 0, None)
        table_column = column - earlier[:, None] + skip[:, None]
        in_table = (table_column >= 0) & (table_column < self.length)
        from_table = self.table[users[:, None], np.clip(table_column, 0, self.length - 1)]
        rows = np.where(
            from_batch,
            items[np.minimum(batch_index, len(items) - 1)] if len(items) else 0,
            np.where(in_table, from_table, PADDING_ROW),
        )
        rows[users == PADDING_ROW] = PADDING_ROW
        return compact_rows(rows)

    def _record(self, users: Rows, items: Rows, stamps: Rows) -> None:
        """Prepend each user's batch items (sorted by user, then time) to their row."""
        keep = (users != PADDING_ROW) & (items != PADDING_ROW)
        users, items, stamps = users[keep], items[keep], stamps[keep]
        if not len(users):
            return
        first = np.r_[True, users[1:] != users[:-1]]
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(users)]
        group_users = users[starts]
        newest = stamps[ends - 1]
        # In-batch events sharing the group's newest timestamp, plus the table's own head
        # ties when the batch continues the same instant.
        at_newest = np.add.reduceat(
            (stamps == np.repeat(newest, ends - starts)).astype(np.int64), starts
        )
        carried = np.where(newest == self.last_time[group_users], self.head_ties[group_users], 0)
        rows = self._gather(group_users, items, starts, ends - starts, np.zeros_like(starts))
        self.table[group_users] = rows
        self.last_time[group_users] = newest
        self.head_ties[group_users] = at_newest + carried

    def reset_users(self, user_rows: Sequence[int]) -> None:
        """Forget evicted users (their rows now belong to new IDs)."""
        if len(user_rows):
            index = np.asarray(user_rows, dtype=np.int64)
            self.table[index] = PADDING_ROW
            self.last_time[index] = np.iinfo(np.int64).min
            self.head_ties[index] = 0

    def drop_items(self, item_rows: Sequence[int]) -> None:
        """Remove evicted items from every history, keeping the rest in order."""
        if not len(item_rows):
            return
        stale = np.isin(self.table, np.asarray(item_rows, dtype=np.int64))
        affected = np.flatnonzero(stale.any(axis=1))
        self.table[affected] = compact_rows(
            np.where(stale[affected], PADDING_ROW, self.table[affected])
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "table": torch.from_numpy(self.table.copy()),
            "last_time": torch.from_numpy(self.last_time.copy()),
            "head_ties": torch.from_numpy(self.head_ties.copy()),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.table = np.array(state["table"], dtype=np.int64, copy=True)
        if "last_time" in state:
            self.last_time = np.array(state["last_time"], dtype=np.int64, copy=True)
            self.head_ties = np.array(state["head_ties"], dtype=np.int64, copy=True)


def compact_rows(rows: Rows) -> Rows:
    """Move padding to the end of each row, keeping the order of the rest."""
    order = np.argsort(rows == PADDING_ROW, axis=1, kind="stable")
    compacted: Rows = np.take_along_axis(rows, order, axis=1)
    return compacted


def _after(last_time: Rows) -> int:
    """A timestamp later than any the table holds (for batches given without times)."""
    newest = int(last_time.max()) if len(last_time) else 0
    return max(newest, 0) + 1
