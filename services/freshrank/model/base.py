"""The one interface every ranking architecture implements (and Triton serves).

``forward(user_row [B,1], history_rows [B,H], candidate_rows [B,C]) -> scores [B,C]``, all
indices int64, row 0 = padding/unknown (see ``freshrank.model.ids``). Architectures register
in ``freshrank.model.registry`` by name; the trainer and exporter only see this interface.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from freshrank.model.knn import UserKnn

__all__ = ["ModelConfig", "RankingModel"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    architecture: str = "sasrec"  # the default everywhere (trainer, demo, CRD)
    num_users: int = 100_000  # embedding rows incl. row 0
    num_items: int = 100_000
    dim: int = 32
    history_len: int = 20
    # sasrec only (other architectures ignore them): item-table views (an ensemble sharing
    # the layers) and the users whose items vote in the user-kNN term (0: no term); see
    # freshrank.model.sasrec and freshrank.model.knn for what each measured.
    views: int = 2
    neighbours: int = 100

    @classmethod
    def from_settings(cls, settings: object, **overrides: Any) -> ModelConfig:
        """The one place a model's shape is built from settings: each field from ``overrides``,
        else ``settings``' attribute of that name (``core.service_settings.ModelSettings``,
        ``EvalSettings``, a tool's parsed flags; None: a flag not given), else the default."""
        values = {
            field.name: getattr(settings, field.name)
            for field in dataclasses.fields(cls)
            if getattr(settings, field.name, None) is not None
        }
        return cls(**{**values, **overrides})


class RankingModel(nn.Module):
    """Base class: subclasses define ``forward`` with the signature above."""

    # TorchScript cannot compile a dataclass attribute; serving never needs it.
    __jit_ignored_attributes__ = ["config"]
    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def train_scores(
        self,
        user_row: torch.Tensor,
        history_rows: torch.Tensor,
        positive_rows: torch.Tensor,
        negative_rows: torch.Tensor,
    ) -> torch.Tensor:
        """[B, 1+K] scores of each row's positive [B] and K negatives shared by the batch.

        The generic path broadcasts the negatives into ``forward``; a model whose score is a
        dot product overrides it with one [B,D] x [D,K] product (and K gradient rows, not B*K).
        """
        batch = positive_rows.shape[0]
        negatives = negative_rows.unsqueeze(0).expand(batch, negative_rows.shape[0])
        candidates = torch.cat([positive_rows.unsqueeze(1), negatives], dim=1)
        scores: torch.Tensor = self(user_row, history_rows, candidates)
        return scores

    def train_targets(
        self, positive_rows: torch.Tensor, history_rows: torch.Tensor
    ) -> torch.Tensor:
        """The target row of each row ``train_scores`` returns (here: the positives)."""
        return positive_rows

    def prior_parameters(self) -> list[nn.Parameter]:
        """Global prior parameters (popularity weights, cold intent): trained at the fast rate."""
        return []

    def observe_items(self, item_rows: torch.Tensor, decay: float) -> None:
        """Stream statistics a model keeps outside gradients (a popularity prior); none here."""

    def observe_pairs(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        """Remember learned (user, item) pairs outside gradients (a kNN memory); none here."""

    def model_scores(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` without the ``memory()`` term (the same, for a model without one)."""
        scores: torch.Tensor = self(user_row, history_rows, candidate_rows)
        return scores

    def memory(self) -> UserKnn | None:
        """The user-kNN term this model adds to its score, if any (the learner tallies its
        weight)."""
        return None

    def reset_rows(self, table: str, rows: list[int]) -> None:
        """Re-initialise embedding rows handed back by ID-map eviction."""
        embedding = getattr(self, f"{table}_embedding", None)
        if isinstance(embedding, nn.Embedding) and rows:
            with torch.no_grad():
                index = torch.tensor(rows, dtype=torch.long, device=embedding.weight.device)
                embedding.weight[index] = torch.randn_like(embedding.weight[index]) * 0.01
