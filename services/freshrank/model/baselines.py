"""The popularity baseline: rank items by time-decayed interaction counts.

It goes through the same prequential loop (ID maps, candidates, metrics) as the models, so
its numbers are comparable to theirs. Counts decay with a half-life in events: the ranking
follows what is popular *now*, which is what a fresh non-personalized fallback should do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from freshrank.model.learner import LearnerConfig, PrequentialLearner, Rows, Scores

__all__ = ["PopularityLearner"]


class PopularityLearner(PrequentialLearner):
    """Score = decayed count of the candidate item; the same for every user."""

    def __init__(self, config: LearnerConfig, half_life: float = 20_000.0) -> None:
        super().__init__(config)
        self.half_life = half_life
        self.counts = np.zeros(config.model.num_items, dtype=np.float64)
        # Counts are stored in units of "now"; decaying everything each batch is one multiply.

    def score(self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows) -> Scores:
        scores: Scores = self.counts[candidate_rows].astype(np.float32)
        return scores

    def learn(self, user_rows: Rows, item_rows: Rows, history_rows: Rows) -> float | None:
        if self.half_life > 0:
            self.counts *= np.exp2(-len(item_rows) / self.half_life)
        np.add.at(self.counts, item_rows, 1.0)
        return None

    def forget_rows(self, users: list[int], items: list[int]) -> None:
        self.counts[items] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "counts": torch.from_numpy(self.counts.copy()),
            "half_life": self.half_life,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.counts = np.array(state["counts"], dtype=np.float64)
        self.half_life = float(state["half_life"])
