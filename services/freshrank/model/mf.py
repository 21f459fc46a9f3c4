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
