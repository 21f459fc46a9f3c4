"""A replay buffer of recent positives, mixed into every training step.

Online updates on one micro-batch pull the model toward that batch and away from what it
knew (forgetting). Replaying past positives counters that; sampling them with a time decay
(half-life in events) keeps the replay biased to the present, so the model still follows
drift instead of anchoring to a stale past.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ReplayBuffer"]

Rows = npt.NDArray[np.int64]


class ReplayBuffer:
    """Ring buffer of (user row, item row, history rows, event index)."""

    def __init__(self, capacity: int, history_len: int, half_life: float) -> None:
        self.capacity = capacity
        self.half_life = half_life
        self.users: Rows = np.zeros(capacity, dtype=np.int64)
        self.items: Rows = np.zeros(capacity, dtype=np.int64)
        self.histories: Rows = np.zeros((capacity, history_len), dtype=np.int64)
        self.seen_at: Rows = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, users: Rows, items: Rows, histories: Rows, seen_at: Rows) -> None:
        if self.capacity == 0:
            return
        for start in range(0, len(users), self.capacity):
            chunk = slice(start, start + self.capacity)
            n = len(users[chunk])
            slots = (self.cursor + np.arange(n)) % self.capacity
            self.users[slots] = users[chunk]
            self.items[slots] = items[chunk]
            self.histories[slots] = histories[chunk]
            self.seen_at[slots] = seen_at[chunk]
            self.cursor = int((self.cursor + n) % self.capacity)
            self.size = min(self.capacity, self.size + n)

    def sample(
        self, count: int, now: int, rng: np.random.Generator
    ) -> tuple[Rows, Rows, Rows] | None:
        """``count`` entries, an entry of age a drawn with weight 2^(-a / half_life)."""
        valid = np.flatnonzero(self.users[: self.size] != 0)
        if count <= 0 or len(valid) == 0:
            return None
        age = (now - self.seen_at[valid]).astype(np.float64)
        weight = np.exp2(-age / self.half_life) if self.half_life > 0 else np.ones_like(age)
        picks = valid[rng.choice(len(valid), size=count, p=weight / weight.sum())]
        return self.users[picks], self.items[picks], self.histories[picks]

    def invalidate(self, user_rows: Sequence[int] = (), item_rows: Sequence[int] = ()) -> None:
        """Drop entries that point at evicted rows (those rows now mean other IDs)."""
        stale = np.zeros(self.size, dtype=bool)
        if len(user_rows):
            stale |= np.isin(self.users[: self.size], np.asarray(user_rows))
        if len(item_rows):
            stale |= np.isin(self.items[: self.size], np.asarray(item_rows))
            hist = self.histories[: self.size]
            hist[np.isin(hist, np.asarray(item_rows))] = 0
        self.users[: self.size][stale] = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "half_life": self.half_life,
            "users": torch.from_numpy(self.users.copy()),
            "items": torch.from_numpy(self.items.copy()),
            "histories": torch.from_numpy(self.histories.copy()),
            "seen_at": torch.from_numpy(self.seen_at.copy()),
            "size": self.size,
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.half_life = float(state["half_life"])
        self.users = np.array(state["users"], dtype=np.int64)
        self.items = np.array(state["items"], dtype=np.int64)
        self.histories = np.array(state["histories"], dtype=np.int64)
        self.seen_at = np.array(state["seen_at"], dtype=np.int64)
        self.size = int(state["size"])
        self.cursor = int(state["cursor"])
