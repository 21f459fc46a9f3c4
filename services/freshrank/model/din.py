"""A Deep-Interest-Network-style ranker: the target item attends over the user's recent items.

For each candidate ``t`` and history item ``h`` an MLP on ``[h, t, h - t, h * t]`` gives an
attention weight (sigmoid, padding masked, no softmax: DIN keeps the intensity of interest);
the weighted sum of history embeddings is the user's interest *in this candidate*. A second
MLP on ``[user, interest, t, interest * t, user * t]`` scores it, plus dot-product and bias
terms so a fresh model ranks sensibly before the MLPs have learned much.

The first attention layer is linear in ``[h, t, h - t, h * t]``, so it splits into
``(W_h + W_d) h + (W_t - W_d) t + W_p (h * t)``: computed that way it is one batched matmul
instead of a [B, C, H, 4D] tensor, which is what makes scoring every item affordable.
"""

from __future__ import annotations

import torch
from torch import nn

from freshrank.model.base import ModelConfig, RankingModel

__all__ = ["DeepInterestNetwork"]


class DeepInterestNetwork(RankingModel):
    def __init__(self, config: ModelConfig, attention_hidden: int = 8, hidden: int = 32) -> None:
        super().__init__(config)
        dim = config.dim
        self.user_embedding = nn.Embedding(config.num_users, dim, padding_idx=0)
        self.item_embedding = nn.Embedding(config.num_items, dim, padding_idx=0)
        self.item_bias = nn.Embedding(config.num_items, 1, padding_idx=0)
        self.attention_in = nn.Linear(4 * dim, attention_hidden)
        self.attention_out = nn.Linear(attention_hidden, 1)
        self.scorer_in = nn.Linear(5 * dim, hidden)  # over [user, interest, t, i * t, u * t]
        self.scorer_out = nn.Linear(hidden, 1)
        nn.init.normal_(self.user_embedding.weight, std=0.01)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.user_embedding.weight[0].zero_()
            self.item_embedding.weight[0].zero_()

    def forward(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        user = self.user_embedding(user_row)  # [B,1,D]
        history = self.item_embedding(history_rows)  # [B,H,D]
        target = self.item_embedding(candidate_rows)  # [B,C,D]
        weights = self._attention(history, target, history_rows != 0)  # [B,C,H]
        interest = torch.bmm(weights, history)  # [B,C,D]
        mlp = self._score_mlp(user, interest, target)  # [B,C]
        dot = ((user + interest) * target).sum(-1)
        scores: torch.Tensor = mlp + dot + self.item_bias(candidate_rows).squeeze(-1)
        return scores

    def _attention(
        self, history: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Sigmoid attention weights [B,C,H] of every (candidate, history item) pair.

        Pre-activation of pair (t, h), unit a: ``t . (W_p[a] * h + V[a]) + U[a] . h + b[a]``
        with ``V = W_t - W_d`` and ``U = W_h + W_d``: one batched matmul of ``[t, 1]``
        against ``[W_p * h + V, U h + b]`` gives all of it, laid out [B,C,H,A].
        """
        dim = history.shape[-1]
        weight = self.attention_in.weight  # [A, 4D] over [h, t, h - t, h * t]
        w_h, w_t = weight[:, :dim], weight[:, dim : 2 * dim]
        w_d, w_p = weight[:, 2 * dim : 3 * dim], weight[:, 3 * dim :]
        batch, length = history.shape[0], history.shape[1]
        per_target = history.unsqueeze(2) * w_p + (w_t - w_d)  # [B,H,A,D]
        constant = history @ (w_h + w_d).t() + self.attention_in.bias  # [B,H,A]
        right = torch.cat([per_target, constant.unsqueeze(-1)], dim=-1)  # [B,H,A,D+1]
        right = right.reshape(batch, -1, dim + 1).transpose(1, 2)  # [B,D+1,H*A]
        left = torch.cat([target, torch.ones_like(target[:, :, :1])], dim=-1)  # [B,C,D+1]
        hidden = torch.relu(torch.bmm(left, right))  # [B,C,H*A]
        units = self.attention_in.out_features
        logits = (hidden.reshape(batch, -1, length, units) @ self.attention_out.weight.t()).squeeze(
            -1
        ) + self.attention_out.bias  # [B,C,H]
        return torch.sigmoid(logits) * mask.unsqueeze(1).to(logits.dtype)

    def _score_mlp(
        self, user: torch.Tensor, interest: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """MLP on ``[user, interest, t, interest * t, user * t]`` -> [B,C]."""
        user_c = user.expand_as(target)
        features = torch.cat([user_c, interest, target, interest * target, user_c * target], dim=-1)
        out: torch.Tensor = self.scorer_out(torch.relu(self.scorer_in(features))).squeeze(-1)
        return out
