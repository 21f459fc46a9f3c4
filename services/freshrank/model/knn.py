"""A user-kNN memory: what users like this one did, as a term added to a model's score.

Session-kNN (V-SKNN, Ludewig & Jannach 2018) over a bounded memory of the past: each item
keeps its ``RECENT_USERS`` newest users and each user their ``USER_ITEMS`` newest distinct
items (buffers, so every export and checkpoint carries the memory as it stands). To score a
request, the users recently met on the request's history items are the neighbour pool; a
pool user's overlap with the history is the summed recency weight (newest 1.0, falling
linearly) of the history items they are a recent user of, divided by the square root of
(history length x their item count) (cosine); the ``neighbours`` most similar vote for the
items they met, each with its similarity; the term is ``log(1 + 10 x votes)``. A user is
never their own neighbour.

Why: on sparse streams a sequence model learns an item's embedding from few events, while
"users who bought this also bought" needs only that the pairs happened. Added to ``sasrec``
with the weight chosen below, Amazon Beauty HR@10 rises 0.474 -> 0.481 (docs/quality-log.md).

The weight of the term is not learned by the loss: likelihood wants a smaller weight than
HR@10 does (measured: the loss-learned weight gains nothing). Instead every sampled
prequential scoring re-ranks its candidates with each weight of ``WEIGHT_GRID`` and counts
each weight's hits (``record_hits``); the weight with the most hits so far is the one used.
That is online model selection on the prequential metric: no future data, no weight read
off a file, and each stream gets its own weight (at the end of `freshrank eval`'s streams with
two views: Amazon Beauty 1.6, the synthetic stream 0.4, MovieLens-100K 0, where every user
has a long history and the term does not help).
"""

# No ``from __future__ import annotations`` here: TorchScript reads the buffers' class
# annotations below, and cannot resolve them as strings.
import torch
from torch import Tensor, nn

__all__ = ["RECENT_USERS", "USER_ITEMS", "WEIGHT_GRID", "UserKnn"]

RECENT_USERS = 20  # newest users kept per item: the neighbour pool of a history item
USER_ITEMS = 20  # newest distinct items kept per user: what a neighbour votes with
# Measured on Amazon Beauty with these bounds: HR@10 as with the whole past (0.4778 against
# 0.4776), and better after the synthetic stream's drift (0.839 against 0.834): it forgets.
WEIGHT_GRID = (0.0, 0.2, 0.4, 0.8, 1.6, 3.2)


class UserKnn(nn.Module):
    # The buffers registered in __init__, typed for mypy and TorchScript.
    recent_users: Tensor
    recent_items: Tensor
    item_counts: Tensor
    weights: Tensor
    hits: Tensor
    weight: Tensor

    def __init__(self, num_users: int, num_items: int, neighbours: int) -> None:
        super().__init__()
        if neighbours < 1:
            raise ValueError("neighbours must be >= 1")
        self.neighbours = neighbours
        # Rows newest first, 0 = empty (row 0 of both ID maps is padding/unknown).
        self.register_buffer(
            "recent_users", torch.zeros(num_items, RECENT_USERS, dtype=torch.int32)
        )
        self.register_buffer("recent_items", torch.zeros(num_users, USER_ITEMS, dtype=torch.int32))
        self.register_buffer("item_counts", torch.zeros(num_users, dtype=torch.int32))  # per row
        self.register_buffer("weights", torch.tensor(WEIGHT_GRID))
        self.register_buffer("hits", torch.zeros(len(WEIGHT_GRID), dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(()))  # the weight with the most hits

    def forward(
        self, user_row: torch.Tensor, history_rows: torch.Tensor, candidate_rows: torch.Tensor
    ) -> torch.Tensor:
        """[B,C]: ``log(1 + 10 x votes)`` of each candidate (unweighted)."""
        neighbours, similarity = self.nearest(user_row, history_rows)  # [B,K,I], [B,K]
        batch = history_rows.shape[0]
        met = neighbours.reshape(batch, -1)  # [B,K*I]
        shares = (similarity.unsqueeze(-1) * (neighbours != 0)).reshape(batch, -1)
        met, order = met.sort(dim=1, stable=True)
        # Votes of a candidate = the summed shares of its equal run in ``met``.
        cumulative = torch.cat(
            [torch.zeros_like(shares[:, :1]), shares.gather(1, order).cumsum(1)], dim=1
        )
        candidates = candidate_rows.contiguous()
        start = torch.searchsorted(met, candidates)
        end = torch.searchsorted(met, candidates, right=True)
        votes = cumulative.gather(1, end) - cumulative.gather(1, start)
        return torch.log1p(10.0 * votes)

    def nearest(
        self, user_row: torch.Tensor, history_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most similar users' items [B,K,I] and similarities [B,K] (0: no neighbour).

        A pool user's overlap with the history is counted on the pairs the memory indexes
        by item: the recency weights of the history items whose recent users include them.
        """
        batch, length = history_rows.shape[0], history_rows.shape[1]
        pool = self.recent_users[history_rows].reshape(batch, -1)  # [B,H*R]
        position = torch.arange(length, device=history_rows.device, dtype=torch.float32)
        recency = (1.0 - position / length) * (history_rows != 0)  # newest 1.0, falling
        shares = recency.repeat_interleave(self.recent_users.shape[1], dim=1)
        pool, order = pool.sort(dim=1, stable=True)
        shares = shares.gather(1, order) * (pool != 0)
        # One slot per distinct pool user (runs of the sorted pool), overlaps summed.
        run = _run_starts(pool).long().cumsum(1) - 1
        overlap = torch.zeros_like(shares).scatter_add_(1, run, shares)
        users = torch.zeros_like(pool).scatter_(1, run, pool).long()
        sizes = self.item_counts[users].clamp(min=1)
        lengths = (history_rows != 0).sum(1, keepdim=True).clamp(min=1)
        usable = (users != 0) & (users != user_row.reshape(-1, 1))
        similarity = overlap / torch.sqrt((lengths * sizes).to(overlap.dtype)) * usable
        top = similarity.topk(min(self.neighbours, pool.shape[1]), dim=1)
        their = self.recent_items[users.gather(1, top.indices)].long()  # [B,K,I]
        return their, top.values

    @torch.jit.unused
    def observe(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        """Remember the pairs (in stream order: later ones are newer)."""
        with torch.no_grad():
            _push_newest(self.recent_users, item_rows, user_rows)
            self._recount(_push_newest(self.recent_items, user_rows, item_rows))

    @torch.jit.unused
    def chosen_weight(self) -> float:
        return float(self.weight)

    @torch.jit.unused
    def record_hits(self, hits: torch.Tensor) -> None:
        """Add each grid weight's hits on a scored batch; the best so far becomes the weight."""
        self.hits.add_(hits.to(self.hits))
        self.weight.copy_(self.weights[int(torch.argmax(self.hits))])  # a tie: the smaller

    @torch.jit.unused
    def forget(self, table: str, rows: list[int]) -> None:
        """ID-map rows handed back: their memory, and every mention of them, is dropped."""
        if not rows:
            return
        by_user, by_item = self.recent_items, self.recent_users
        with torch.no_grad():
            index = torch.tensor(rows, dtype=torch.long, device=by_user.device)
            if table == "user":
                by_user[index] = 0
                by_item[torch.isin(by_item, index.to(by_item.dtype))] = 0
                self._recount(index)
            else:
                by_item[index] = 0
                mentioned = torch.isin(by_user, index.to(by_user.dtype))
                by_user[mentioned] = 0
                self._recount(mentioned.any(1).nonzero().squeeze(1))

    @torch.jit.unused
    def _recount(self, user_rows: torch.Tensor) -> None:
        present = self.recent_items[user_rows] != 0
        self.item_counts[user_rows] = present.sum(1).to(self.item_counts.dtype)


def _push_newest(table: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Put each pair's value first in its key's row (newest first, distinct, row-width kept);
    returns the rows touched.

    One sort-based pass for the whole batch (no loop per event): the batch's pairs, newest
    last in the batch, go before the rows' old entries; a repeated value keeps its newest
    place; each row keeps its first ``width``.
    """
    known = (keys != 0) & (values != 0)
    keys, values = keys[known].long(), values[known].long()
    if keys.numel() == 0:
        return keys
    width, count = table.shape[1], keys.numel()
    touched: torch.Tensor = torch.unique(keys)
    old = table[touched].long().reshape(-1)
    device = keys.device
    all_keys = torch.cat([keys, touched.repeat_interleave(width)])
    all_values = torch.cat([values, old])
    ages = torch.cat(
        [
            torch.arange(count - 1, -1, -1, device=device),
            count + torch.arange(width, device=device).repeat(touched.numel()),
        ]
    )
    present = all_values != 0
    all_keys, all_values, ages = all_keys[present], all_values[present], ages[present]
    order = _lexicographic(all_keys, all_values, ages)
    all_keys, all_values, ages = all_keys[order], all_values[order], ages[order]
    newest = _run_starts(all_keys) | _run_starts(all_values)
    all_keys, all_values, ages = all_keys[newest], all_values[newest], ages[newest]
    order = _lexicographic(all_keys, ages)
    all_keys, all_values = all_keys[order], all_values[order]
    starts = _run_starts(all_keys)
    position = torch.arange(all_keys.numel(), device=device)
    rank = position - torch.where(starts, position, 0).cummax(0).values
    kept = rank < width
    table[touched] = 0
    table[all_keys[kept], rank[kept]] = all_values[kept].to(table.dtype)
    return touched


def _lexicographic(*columns: torch.Tensor) -> torch.Tensor:
    """The order sorting by the first column, then the next (stable sorts, last key first)."""
    order = torch.arange(columns[0].numel(), device=columns[0].device)
    for column in reversed(columns):
        order = order[column[order].sort(stable=True).indices]
    return order


def _run_starts(sorted_values: torch.Tensor) -> torch.Tensor:
    """Marks the first element of each run of equal values (along the last dimension)."""
    starts = torch.ones_like(sorted_values, dtype=torch.bool)
    starts[..., 1:] = sorted_values[..., 1:] != sorted_values[..., :-1]
    return starts
