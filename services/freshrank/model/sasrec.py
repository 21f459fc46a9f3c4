"""A SASRec-style sequence model with a popularity prior: the default for sparse streams.

Score of candidate ``t`` for a user with recent items ``h_1..h_H`` (newest first):

    log sum_{j <= M} exp <state_j(h) + user, t> + bias_t + sum_s w_s * log(1 + decayed_count_s(t))

- ``state`` is causal self-attention over the history (Kang & McAuley, SASRec, 2018): each
  position attends to itself and older positions only, learned recency-position
  embeddings, one pre-norm block, no dropout; position j's output is the intent after h_j.
  It needs no user row, so an unknown user is scored from the items of their session. An
  empty history encodes to a learned *cold intent*: what newcomers pick.
- The newest ``M`` states (``interests``, 3) each score the candidate and a log-sum-exp (a
  soft maximum) joins them: the next item may follow any of the last few, not only the
  newest (several interest vectors with a max, as MIND and ComiRec do). A soft maximum of
  three dot products can rank ten items that follow three different purchases; one vector
  has to average them. With one state present (a history of one item, or none) it is
  SASRec's score exactly. Measured with the row-wise Adagrad tables: HR@10 on Amazon Beauty
  0.462 -> 0.465, MovieLens-100K 0.632 -> 0.649, synthetic 0.794 -> 0.808 (docs/quality-log.md).
- ``user`` is a per-user embedding (zero at start): long histories add a stable taste on top.
- ``bias_t + sum_s w_s * log(1 + decayed_count_s(t))`` is the popularity and recency prior:
  decayed counts at several time scales (``PRIOR_SCALES``) are buffers the learner updates
  from the stream (what is popular *now*; the middle scale has the popularity baseline's
  half-life), the weights ``w_s`` and the bias are learned, starting at the baseline (weight
  1 on the middle scale, 0 elsewhere). An untrained model scores a cold user exactly by
  popularity; a trained one by the prior plus the cold intent, and moves away from it as
  evidence arrives. The counts travel with every export, so serving has the prior of the
  moment the model was exported.
- ``views`` (``ModelConfig.views``, 2): the item table is that many tied tables through the
  same layers, the score their mean: a two-model ensemble for one encoder's weights.
- Plus ``a x log(1 + 10 x votes)``: a user-kNN memory of what users with overlapping
  histories met (``freshrank.model.knn``; ``ModelConfig.neighbours``, 0 turns it off), its
  weight ``a`` chosen online by prequential hits. Its memory is buffers too, exported with
  every version, so Triton serves the neighbours of the moment of the export.

Measured on Amazon Beauty (HR@10, overall / after the first 20 %; popularity 0.4165 /
0.4392): one view without the term 0.470 / 0.504, two views 0.474 / 0.508, two views with
the term (the default) 0.481 / 0.516, 1.155x / 1.174x popularity (docs/quality-log.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from freshrank.model.base import ModelConfig, RankingModel
from freshrank.model.knn import UserKnn

__all__ = ["PRIOR_SCALES", "SelfAttentiveSequential"]

# Time scales of the popularity prior, as multiples of the learner's popularity half-life
# (20k events: 2k, 20k and 200k events), a decade apart so their mix can express a trend.
PRIOR_SCALES = (0.1, 1.0, 10.0)


class _CausalBlock(nn.Module):
    """Pre-norm single-head self-attention plus a position-wise feed-forward layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, dim)
        self.ffn_out = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        logits = torch.bmm(query, key.transpose(1, 2)) * self.scale  # [B,H,H]
        weights = torch.softmax(logits.masked_fill(~allowed, -1e9), dim=-1)
        x = x + self.out(torch.bmm(weights, value))
        hidden = torch.relu(self.ffn_in(self.ffn_norm(x)))
        out: torch.Tensor = x + self.ffn_out(hidden)
        return out


class SelfAttentiveSequential(RankingModel):
    def __init__(
        self,
        config: ModelConfig,
        layers: int = 1,
        every_position: bool = False,
        interests: int = 3,
    ) -> None:
        super().__init__(config)
        views = config.views
        if interests < 1 or views < 1:
            raise ValueError("interests and views must be >= 1")
        if every_position and views > 1:
            raise ValueError("every_position trains one view only")
        self.interests = interests
        # ``views`` tied item tables (each the history's input and the candidate's output)
        # through the same layers, each with its own item bias and prior mix and its own
        # softmax loss; the score is their mean. Stored as one table of views x dim columns,
        # so ID eviction and the optimizer treat a row as one row. Two views (the default:
        # 1.75x the CPU, twice the item table): HR@10 on Amazon Beauty 0.470 -> 0.474
        # (0.504 -> 0.508 after 20 %), MovieLens-100K 0.655 -> 0.656, synthetic 0.815 ->
        # 0.817: a two-model ensemble's gain; two output tables read by one encoder pass
        # gain nothing, so each view must also be its own history's input.
        self.views = views
        self.dim = config.dim
        # Train every history position on its next item (SASRec's own objective) with
        # shared negatives; measured worse than the event-only signal on Amazon Beauty
        # online (HR@10 0.388 vs 0.433), so off by default.
        self.every_position = every_position
        dim = config.dim
        self.user_embedding = nn.Embedding(config.num_users, dim, padding_idx=0)
        self.item_embedding = nn.Embedding(config.num_items, views * dim, padding_idx=0)
        self.item_bias = nn.Embedding(config.num_items, views, padding_idx=0)
        self.position = nn.Parameter(torch.randn(config.history_len, dim) * 0.01)
        # No dropout, unlike offline SASRec (0.2 on dense data, 0.5 on sparse): online, each
        # event is learned once or twice, so there is little to memorise and dropout only
        # adds noise. HR@10 without it (was 0.2): Amazon Beauty 0.465 -> 0.467 (seed 1: 0.465
        # -> 0.467), MovieLens-100K 0.649 -> 0.654, synthetic 0.808 -> 0.810 (0.1: Beauty 0.466,
        # 0.5: 0.441 before the current tables; docs/quality-log.md). Without dropout one
        # attention block is enough, and cheaper: HR@10 with one instead of two, Beauty 0.467
        # -> 0.470 (seed 1: 0.467 -> 0.469), MovieLens-100K 0.654 -> 0.655 (seed 1: 0.653 ->
        # 0.652), synthetic 0.810 -> 0.815 (after the drift 0.834 -> 0.839).
        self.blocks = nn.ModuleList([_CausalBlock(dim) for _ in range(layers)])
        # The intent of a user with no history yet: learned from first events, so a cold
        # user starts at "what newcomers pick" (on top of the prior), not at zero.
        self.cold_intent = nn.Parameter(torch.zeros(dim))
        self.final_norm = nn.LayerNorm(dim)
        # Decayed interaction counts per item row at several time scales (buffers: exported,
        # never trained): what is popular this hour, this day, this season. The scales are
        # the learner's popularity half-life times PRIOR_SCALES; the prior starts as the
        # popularity baseline (weight 1 on the middle scale) and learns its own mix.
        self.register_buffer("popularity", torch.zeros(len(PRIOR_SCALES), config.num_items))
        self.register_buffer(
            "scale_exponents", torch.tensor([1.0 / scale for scale in PRIOR_SCALES])
        )
        # [views x scales], flat (one view: the shape of checkpoints from before views).
        self.prior_weight = nn.Parameter(
            torch.tensor([1.0 if scale == 1.0 else 0.0 for scale in PRIOR_SCALES] * views)
        )
        nn.init.zeros_(self.user_embedding.weight)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.input_scale = math.sqrt(dim)
        # What similar users did (``freshrank.model.knn``), added to the score with the
        # weight its prequential tally chose; ``neighbours`` 0 turns it off (a stub memory
        # keeps the TorchScript graph one shape).
        self.with_knn = config.neighbours > 0
        self.knn = (
            UserKnn(config.num_users, config.num_items, config.neighbours)
            if self.with_knn
            else UserKnn(1, 1, 1)
        )

    def forward(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        scores = self.model_scores(user_row, history_rows, candidate_rows)
        if self.with_knn:
            scores = scores + self.knn.weight * self.knn(user_row, history_rows, candidate_rows)
        return scores

    def model_scores(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        """[B,C] without the kNN term: the views' mean of the states' soft maximum + prior."""
        states = self.intents(history_rows) + self.user_embedding(user_row).unsqueeze(1)
        batch, count = candidate_rows.shape[0], candidate_rows.shape[1]
        target = self.per_view(self.item_embedding(candidate_rows)).transpose(1, 2)  # [B,V,C,D]
        flat_states = states.reshape(batch * self.views, -1, self.dim)  # [B*V,M,D]
        flat_target = target.reshape(batch * self.views, count, self.dim)
        per_state = torch.bmm(flat_target, flat_states.transpose(1, 2))  # [B*V,C,M]
        per_state = per_state.view(batch, self.views, count, -1)
        priors = self.view_priors(candidate_rows).transpose(1, 2)  # [B,V,C]
        scores: torch.Tensor = (self.join(per_state, history_rows) + priors).mean(1)
        return scores

    def per_view(self, rows: torch.Tensor) -> torch.Tensor:
        """[..., V*D] table rows -> [..., V, D]."""
        # Concatenated, not starred: TorchScript has no starred list expressions.
        return rows.view(list(rows.shape[:-1]) + [self.views, self.dim])  # noqa: RUF005

    def join(self, per_state: torch.Tensor, history_rows: torch.Tensor) -> torch.Tensor:
        """[B,...]: log-sum-exp over the states present of per-state scores [B,...,M]."""
        count = per_state.shape[-1]
        present = history_rows[:, :count] != 0
        # The newest state is always there (an empty history's is the cold intent).
        present = present | (torch.arange(count, device=present.device) == 0)
        shape = [present.shape[0]] + [1] * (per_state.dim() - 2) + [count]
        masked = per_state.masked_fill(~present.view(shape), -1e9)
        return torch.logsumexp(masked, dim=-1)

    def train_scores(
        self,
        user_row: torch.Tensor,
        history_rows: torch.Tensor,
        positive_rows: torch.Tensor,
        negative_rows: torch.Tensor,
    ) -> torch.Tensor:
        """SASRec's training signal: every history position predicts the item after it.

        Returns [N, 1+K] for the N (position, next item) pairs present, the batch's own
        positives first (position 0 predicts the event itself). With causal attention a
        position sees only older items, so each pair is a fair next-item prediction; a
        sparse stream gets H training pairs per event instead of one.
        """
        user = self.user_embedding(user_row)  # [B,1,D]
        if self.every_position:  # one view (checked at construction)
            states = self.encode_all(history_rows)[:, 0] + user  # [B,H,D]
            empty = (history_rows[:, 0] == 0).to(states.dtype)
            states[:, 0] = states[:, 0] + empty.unsqueeze(1) * self.cold_intent
            present = self._pairs(positive_rows, history_rows)
            targets = torch.cat([positive_rows.unsqueeze(1), history_rows[:, :-1]], dim=1)
            target = targets[present]  # [N]
            intent = states[present]  # [N,D]
            positive = (self.item_embedding(target) * intent).sum(-1) + self.prior(target)
            negative = intent @ self.item_embedding(negative_rows).t() + self.prior(negative_rows)
            return torch.cat([positive.unsqueeze(1), negative], dim=1)
        # One pair per event and view, view-major (view 0's B rows first): each view's
        # states soft-maxed and scored against its own table, its own softmax loss.
        recent = self.intents(history_rows) + user.unsqueeze(1)  # [B,V,M,D]
        own = torch.einsum(
            "bvd,bvmd->bvm", self.per_view(self.item_embedding(positive_rows)), recent
        )
        positive = self.join(own, history_rows) + self.view_priors(positive_rows)  # [B,V]
        shared = torch.einsum(
            "bvmd,svd->bvsm", recent, self.per_view(self.item_embedding(negative_rows))
        )
        negative = self.join(shared, history_rows) + self.view_priors(negative_rows).t()
        scores = torch.cat([positive.unsqueeze(2), negative], dim=2)  # [B,V,1+S]
        return scores.transpose(0, 1).reshape(-1, scores.shape[-1])

    def train_targets(
        self, positive_rows: torch.Tensor, history_rows: torch.Tensor
    ) -> torch.Tensor:
        """The target row of each pair ``train_scores`` returns, in the same order."""
        targets = torch.cat([positive_rows.unsqueeze(1), history_rows[:, :-1]], dim=1)
        return targets[self._pairs(positive_rows, history_rows)].repeat(self.views)

    def _pairs(self, positive_rows: torch.Tensor, history_rows: torch.Tensor) -> torch.Tensor:
        """[B,H] mask of the (position, next item) pairs trained on."""
        targets = torch.cat([positive_rows.unsqueeze(1), history_rows[:, :-1]], dim=1)
        present = (history_rows != 0) & (targets != 0)
        if not self.every_position:
            present = torch.zeros_like(present)
        present[:, 0] = True  # the event itself: an empty history still predicts it
        return present

    def prior(self, candidate_rows: torch.Tensor) -> torch.Tensor:
        """Popularity and recency prior (shape of the rows), the views' mean."""
        return self.view_priors(candidate_rows).mean(-1)

    def view_priors(self, candidate_rows: torch.Tensor) -> torch.Tensor:
        """[*rows, V]: each view's bias + weights * log decayed counts."""
        counts = torch.log1p(self._counts()[:, candidate_rows])  # [S, *rows]
        weights = self.prior_weight.view(self.views, -1)  # [V, S]
        weighted = torch.matmul(counts.movedim(0, -1), weights.t())  # [*rows, V]
        prior: torch.Tensor = self.item_bias(candidate_rows) + weighted
        return prior

    def intents(self, history_rows: torch.Tensor) -> torch.Tensor:
        """[B,V,M,D]: the newest ``interests`` positions' outputs (zero where no item); the
        newest is the learned cold intent for an empty history."""
        states = self.encode_all(history_rows)[:, :, : self.interests]
        empty = (history_rows[:, 0] == 0).view(-1, 1, 1).to(states.dtype)
        newest = states[:, :, 0] + empty * self.cold_intent
        return torch.cat([newest.unsqueeze(2), states[:, :, 1:]], dim=2)

    def encode_all(self, history_rows: torch.Tensor) -> torch.Tensor:
        """[B,V,H,D]: every position's output per view (zero where there is no item); the
        views run through the layers as one batch of B x V sequences."""
        batch, length = history_rows.shape[0], history_rows.shape[1]
        present = history_rows != 0  # [B,H], newest first, padding at the end
        inputs = self.per_view(self.item_embedding(history_rows)).transpose(1, 2)  # [B,V,H,D]
        x = inputs.reshape(batch * self.views, length, self.dim) * self.input_scale
        x = x + self.position[:length]
        present = present.repeat_interleave(self.views, dim=0)  # [B*V,H]
        x = x * present.unsqueeze(-1).to(x.dtype)
        index = torch.arange(length, device=history_rows.device)
        # Newest first: position i may see itself and the older positions j >= i.
        causal = index.unsqueeze(0) >= index.unsqueeze(1)  # [H(query), H(key)]
        allowed = causal.unsqueeze(0) & present.unsqueeze(1)
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=history_rows.device)
        for block in self.blocks:
            x = block(x, allowed)
        states = self.final_norm(x)
        encoded: torch.Tensor = states * present.unsqueeze(-1).to(states.dtype)
        return encoded.view(batch, self.views, length, self.dim)

    def prior_parameters(self) -> list[nn.Parameter]:
        return [self.prior_weight, self.cold_intent]

    def _counts(self) -> torch.Tensor:
        counts = self.popularity
        assert isinstance(counts, torch.Tensor)  # a buffer (typed for mypy and TorchScript)
        return counts

    def observe_items(self, item_rows: torch.Tensor, decay: float) -> None:
        """Decay the prior's counts by ``decay`` and count ``item_rows`` (one each)."""
        with torch.no_grad():
            counts = self._counts()
            exponents = self.scale_exponents
            assert isinstance(exponents, torch.Tensor)
            counts.mul_(torch.pow(torch.full_like(exponents, decay), exponents).unsqueeze(1))
            ones = torch.ones(len(item_rows), dtype=counts.dtype, device=counts.device)
            counts.index_add_(1, item_rows, ones.expand(counts.shape[0], -1))
            counts[:, 0] = 0.0

    def observe_pairs(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        if self.with_knn:
            self.knn.observe(user_rows, item_rows)

    def memory(self) -> UserKnn | None:
        return self.knn if self.with_knn else None

    def reset_rows(self, table: str, rows: list[int]) -> None:
        if self.with_knn:
            self.knn.forget(table, rows)
        if table == "user":
            if rows:
                with torch.no_grad():
                    index = torch.tensor(rows, dtype=torch.long, device=self._counts().device)
                    self.user_embedding.weight[index] = 0.0
            return
        super().reset_rows(table, rows)
        if rows:
            with torch.no_grad():
                index = torch.tensor(rows, dtype=torch.long, device=self._counts().device)
                self._counts()[:, index] = 0.0
