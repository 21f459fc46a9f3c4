"""Matrix factorization: score = <user, item> + item bias. The baseline architecture."""

from __future__ import annotations

import torch
from torch import nn

from freshrank.model.base import ModelConfig, RankingModel

__all__ = ["MatrixFactorization"]


class MatrixFactorization(RankingModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.user_embedding = nn.Embedding(config.num_users, config.dim, padding_idx=0)
        self.item_embedding = nn.Embedding(config.num_items, config.dim, padding_idx=0)
        self.item_bias = nn.Embedding(config.num_items, 1, padding_idx=0)
        nn.init.normal_(self.user_embedding.weight, std=0.01)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():  # row 0 (unknown/padding) starts and stays at zero, as in DIN
            self.user_embedding.weight[0].zero_()
            self.item_embedding.weight[0].zero_()

    def forward(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        user = self.user_embedding(user_row)  # [B,1,D]
        items = self.item_embedding(candidate_rows)  # [B,C,D]
        scores: torch.Tensor = (items * user).sum(-1) + self.item_bias(candidate_rows).squeeze(-1)
        return scores

    def train_scores(
        self,
        user_row: torch.Tensor,
        history_rows: torch.Tensor,
        positive_rows: torch.Tensor,
        negative_rows: torch.Tensor,
    ) -> torch.Tensor:
        """[B, 1+K] as one [B,D] x [D,K] product: K gradient rows for shared negatives."""
        user = self.user_embedding(user_row).squeeze(1)  # [B,D]
        positive = (self.item_embedding(positive_rows) * user).sum(-1)
        positive = positive + self.item_bias(positive_rows).squeeze(-1)
        negative = user @ self.item_embedding(negative_rows).t()
        negative = negative + self.item_bias(negative_rows).squeeze(-1).unsqueeze(0)
        return torch.cat([positive.unsqueeze(1), negative], dim=1)
