"""A model's HR@10 with and without a user-kNN memory added to its score, against popularity.

The kNN term is session-kNN (V-SKNN, Ludewig & Jannach 2018) over the past: the user's
history, recency-weighted (newest 1.0, falling linearly), is compared by cosine with every
earlier user's item set; the ``--neighbours`` most similar users vote for the items they met,
each with its similarity; the model's score gains ``--weight * log(1 + 10 * votes)``. The
memory holds only the (user, item) pairs of batches already scored and learned, and a user is
never their own neighbour, so the evaluation stays prequential. The model trains exactly as
without the term; the weight is given, or with ``--weight auto`` chosen online from a fixed
grid by the hits of the batches already scored (docs/quality-log.md says why it is not
learned by the loss).

Popularity, the model and the model with the term run over the same micro-batches and the
same seeded candidates (``freshrank eval``'s protocol). An experiment, not a registered model:
serving the term would need a feature-service read of each request's neighbours.

Usage:
  PYTHONPATH=services python benchmarks/eval_knn.py --dataset amazon-beauty --weight auto
  PYTHONPATH=services python benchmarks/eval_knn.py --weight 1.2 --neighbours 300 --seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from freshrank.core.codec import InteractionEvent
from freshrank.evaluation.datasets import load_dataset
from freshrank.evaluation.runner import EvalSettings, learner_config
from freshrank.model.baselines import PopularityLearner
from freshrank.model.learner import LearnerConfig, OnlineLearner, PrequentialLearner
from freshrank.model.metrics import hit_rate_at_k, ndcg_at_k, ranks_of_true
from freshrank.model.registry import LEARNER_DEFAULTS

Rows = npt.NDArray[np.int64]
_AUTO = [0.0, 0.2, 0.4, 0.8, 1.6, 3.2]  # the weights --weight auto chooses among


class UserKnnMemory:
    """The past (user, item) pairs, and session-kNN votes of a batch's users over them.

    ``recent_users`` > 0 bounds the neighbours to the users among the newest that many of
    each history item (what a store can serve: "recent users of these items"), and
    ``user_items`` > 0 keeps only each user's newest that many items (a stored history).
    """

    def __init__(
        self, num_items: int, neighbours: int, recent_users: int = 0, user_items: int = 0
    ) -> None:
        self.num_items = num_items
        self.neighbours = neighbours
        self.recent_users = recent_users
        self.user_items = user_items
        self._users: list[Rows] = []
        self._items: list[Rows] = []
        self._matrix: _Pairs | None = None

    def add(self, user_rows: Rows, item_rows: Rows) -> None:
        self._users.append(user_rows.copy())
        self._items.append(item_rows.copy())
        self._matrix = None

    def votes(self, user_rows: Rows, history_rows: Rows) -> torch.Tensor:
        """[B, items]: summed similarity of each user's nearest neighbours who met each item."""
        batch, length = history_rows.shape
        if not self._users:
            return torch.zeros(batch, self.num_items)
        pairs = self._pairs()
        history = torch.from_numpy(history_rows)
        recency = 1.0 - torch.arange(length, dtype=torch.float32) / length
        query = torch.zeros(batch, self.num_items)
        query.scatter_add_(1, history, (history != 0).float() * recency)
        query[:, 0] = 0.0  # padding
        lengths = (history != 0).sum(1).clamp(min=1).float()
        overlap = torch.sparse.mm(pairs.met, query.t()).t()  # [B, users]
        sizes = pairs.sizes.clamp(min=1).unsqueeze(0)
        similarity = overlap / torch.sqrt(lengths.unsqueeze(1) * sizes)
        if pairs.recent is not None:  # only the recent users of the history's items
            reachable = torch.sparse.mm(pairs.recent, (query > 0).float().t()).t() > 0
            similarity = similarity * reachable
        users = torch.from_numpy(user_rows)
        own = (users > 0) & (users < similarity.shape[1])
        similarity[torch.arange(batch)[own], users[own]] = 0.0  # not one's own neighbour
        nearest = torch.topk(similarity, min(self.neighbours, similarity.shape[1]), dim=1)
        kept = torch.zeros_like(similarity).scatter_(1, nearest.indices, nearest.values)
        votes: torch.Tensor = torch.sparse.mm(pairs.met_by_item, kept.t()).t()
        return votes

    def _pairs(self) -> _Pairs:
        """The matrices of the pairs so far (cached until the next ``add``)."""
        if self._matrix is None:
            users, items = np.concatenate(self._users), np.concatenate(self._items)
            shape = (int(users.max()) + 1, self.num_items)
            kept = _newest(users, self.user_items)
            met = _binary(users[kept], items[kept], shape)
            recent = None
            if self.recent_users:
                newest = _newest(items, self.recent_users)
                recent = _binary(users[newest], items[newest], shape)
            sizes = torch.sparse.sum(met, dim=1).to_dense()
            self._matrix = _Pairs(met, met.t().coalesce(), sizes, recent)
        return self._matrix


@dataclasses.dataclass(frozen=True)
class _Pairs:
    met: torch.Tensor  # sparse 0/1 [users, items]
    met_by_item: torch.Tensor  # its transpose
    sizes: torch.Tensor  # [users]: items each user has in ``met``
    recent: torch.Tensor | None  # sparse 0/1 [users, items]: the newest users of each item


def _newest(keys: Rows, limit: int) -> npt.NDArray[np.bool_]:
    """Marks the pairs among the ``limit`` newest of their key (all when ``limit`` is 0)."""
    if not limit:
        return np.ones(len(keys), dtype=bool)
    order = np.lexsort((-np.arange(len(keys)), keys))  # by key, newest first
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    newest = np.zeros(len(keys), dtype=bool)
    newest[order[rank < limit]] = True
    return newest


def _binary(users: Rows, items: Rows, shape: tuple[int, int]) -> torch.Tensor:
    index = torch.from_numpy(np.stack([users, items]))
    counted = torch.sparse_coo_tensor(
        index, torch.ones(index.shape[1]), shape, check_invariants=False
    ).coalesce()
    ones = torch.ones(counted.indices().shape[1])
    return torch.sparse_coo_tensor(
        counted.indices(), ones, shape, check_invariants=False
    ).coalesce()


class KnnLearner(OnlineLearner):
    """The model learner, its scores plus the kNN term.

    With one weight the term has that weight. With several (``--weight auto``), each scored
    batch uses the one with the most hits on the batches scored before it (every weight
    re-ranks the same scores, so all are tallied on each batch after it is scored): online
    model selection on the prequential metric, leak-free, with no weight read off the file.
    """

    def __init__(self, config: LearnerConfig, weights: list[float], memory: UserKnnMemory) -> None:
        super().__init__(config)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.hits = np.zeros(len(weights))
        self.memory = memory
        self._tallied_step = -1

    @property
    def weight(self) -> float:
        return float(self.weights[int(np.argmax(self.hits))])

    def score(
        self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows
    ) -> npt.NDArray[np.float32]:
        scores = super().score(user_rows, history_rows, candidate_rows)
        votes = self.memory.votes(user_rows.reshape(-1), history_rows)
        term = torch.log1p(10.0 * votes.gather(1, torch.from_numpy(candidate_rows))).numpy()
        blended: npt.NDArray[np.float32] = scores + self.weight * term
        sampled = candidate_rows.shape[1] == self.config.negatives + 1  # true item first
        if sampled and self._tallied_step != self.steps:
            self._tallied_step = self.steps  # the batch's sampled candidates, not its full ranks
            for index, weight in enumerate(self.weights):
                each = scores + weight * term
                self.hits[index] += hit_rate_at_k(ranks_of_true(each[:, 0], each[:, 1:])).sum()
        return blended

    def _after_learning(self, user_rows: Rows, item_rows: Rows, histories: Rows) -> None:
        super()._after_learning(user_rows, item_rows, histories)
        self.memory.add(user_rows, item_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--model", default="sasrec", help="an architecture (mf, din, sasrec)")
    parser.add_argument(
        "--weight",
        default="0.8",
        help="of log(1 + 10 x votes): a number, or 'auto' (chosen online from 0, 0.2 ... 3.2)",
    )
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument(
        "--recent-users",
        type=int,
        default=0,
        help="neighbours only among the N newest users of each history item (0: any past user)",
    )
    parser.add_argument(
        "--user-items", type=int, default=0, help="a user's newest N items only (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset, args.limit)
    settings = EvalSettings(device="cpu", seed=args.seed)
    base = learner_config(settings, dataset, args.model)
    defaults: dict[str, Any] = dict(LEARNER_DEFAULTS.get(args.model, {}))
    config = dataclasses.replace(base, **defaults)
    weights = _AUTO if args.weight == "auto" else [float(args.weight)]
    memory = UserKnnMemory(
        config.model.num_items, args.neighbours, args.recent_users, args.user_items
    )
    learners: dict[str, PrequentialLearner] = {
        "popularity": PopularityLearner(base),
        args.model: OnlineLearner(config),
        f"{args.model}+knn": KnnLearner(config, weights, memory),
    }
    ranks, seconds = _run(learners, dataset.events, settings.batch_size)
    print(
        f"{dataset.name}: weight {args.weight}, {args.neighbours} neighbours (recent users "
        f"{args.recent_users or 'all'}, user items {args.user_items or 'all'}), seed {args.seed}"
    )
    segments = {"all": 0, "after 20 %": int(len(dataset.events) * settings.static_fraction)}
    if dataset.drift_index is not None:
        segments["after the drift"] = dataset.drift_index
    rows = _report(ranks, seconds, segments)
    knn = learners[f"{args.model}+knn"]
    assert isinstance(knn, KnnLearner)
    tallies = ", ".join(
        f"{w:g}: {h / len(dataset.events):.4f}" for w, h in zip(knn.weights, knn.hits, strict=True)
    )
    print(f"HR@10 of each weight over the whole stream: {tallies}; chosen last: {knn.weight:g}")
    if args.output is not None:
        payload = {"dataset": dataset.name, "args": {**vars(args), "output": str(args.output)}}
        args.output.write_text(json.dumps({**payload, "results": rows}, indent=1))


def _run(
    learners: dict[str, PrequentialLearner], events: Sequence[InteractionEvent], batch_size: int
) -> tuple[dict[str, Rows], dict[str, float]]:
    """Step every learner over the same micro-batches: the true item's rank per event, and
    each learner's seconds."""
    ranks: dict[str, list[Rows]] = {name: [] for name in learners}
    seconds = dict.fromkeys(learners, 0.0)
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        for name, learner in learners.items():
            began = time.perf_counter()
            learner.step(batch)
            seconds[name] += time.perf_counter() - began
            ranks[name].append(learner.last_ranks)
    return {name: np.concatenate(parts) for name, parts in ranks.items()}, seconds


def _report(
    ranks: dict[str, Rows], seconds: dict[str, float], segments: dict[str, int]
) -> dict[str, dict[str, dict[str, float]]]:
    """Print HR@10 and NDCG@10, and their ratios to popularity's, from each segment's first
    event on; returns them by model and segment."""
    print("| model | events | HR@10 | ratio | NDCG@10 | ratio | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name, rank in ranks.items():
        rows[name] = {}
        for segment, first in segments.items():
            hr, ndcg = _metrics(rank[first:])
            base_hr, base_ndcg = _metrics(ranks["popularity"][first:])
            rows[name][segment] = {"hr10": hr, "ndcg10": ndcg, "seconds": seconds[name]}
            print(
                f"| {name} | {segment} | {hr:.4f} | {hr / base_hr:.3f} | {ndcg:.4f} "
                f"| {ndcg / base_ndcg:.3f} | {seconds[name]:.0f} |"
            )
    return rows


def _metrics(ranks: Rows) -> tuple[float, float]:
    return float(hit_rate_at_k(ranks).mean()), float(ndcg_at_k(ranks).mean())


if __name__ == "__main__":
    main()
