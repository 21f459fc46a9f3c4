"""The incremental-training core on in-memory data: test-then-train on micro-batches.

Used alike by the trainer service (Kafka) and by ``freshrank eval``. Every micro-batch is
first *scored* with the model as it stands (HR@10 and NDCG@10 of the true item among sampled
negatives and among all known items), and only then do the ID maps, user histories, model
and replay buffer learn from it: prequential evaluation, so no event is ever scored by a
model that trained on it.

Evaluation protocol (shared by every learner, so baselines and models see identical
candidates; it follows common practice, e.g. RecBole and ReChorus):
- the model and ID maps are those of the batch start: users and items first seen in the
  batch are unknown, scored on row 0 (the serving cold-start path), and still count; an
  unknown user still brings the items of their current session as history;
- each event's history holds the user's events with a strictly earlier timestamp, earlier
  events of the same batch included (a live feature store has them; only the model lags by
  one micro-batch); events of one user with the same timestamp are simultaneous;
- sampled: the true item against ``negatives`` items drawn uniformly *without replacement*
  (seeded per step, so the same for every learner) from the known catalogue, excluding the
  true item and every item the user interacted with before;
- full: the true item against every known item the user has not interacted with before,
  for up to ``full_eval_events`` events of each batch (a seeded subset: scoring the whole
  catalogue for every event is the cost that dominates);
- ties count against the true item (see ``freshrank.model.metrics``).

Learning, which comes after scoring, reads a user's simultaneous events in stream order as
history (the same-day co-purchase signal; measured on all three eval streams, README).

Training: sampled softmax over the positive and ``train_negatives`` uniform negatives
(accidental hits masked), with a time-decayed replay of recent positives mixed into each
step against forgetting. Embedding tables are sparse (``SparseAdam`` or row-wise Adagrad,
``sparse_optimizer``, touch only the rows of the batch, which is what a 100k-row table
online needs); the dense layers use Adam.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from freshrank.core.codec import InteractionEvent
from freshrank.model.base import ModelConfig, RankingModel
from freshrank.model.export import export_version
from freshrank.model.history import UserHistories, compact_rows
from freshrank.model.ids import PADDING_ROW, IdMap
from freshrank.model.knn import WEIGHT_GRID
from freshrank.model.metrics import RollingMetrics, hit_rate_at_k, ndcg_at_k, ranks_of_true
from freshrank.model.registry import build_model
from freshrank.model.replay import ReplayBuffer
from freshrank.model.seen import SeenPairs
from freshrank.model.sparse_optim import RowWiseAdagrad

__all__ = [
    "LearnerConfig",
    "OnlineLearner",
    "PrequentialLearner",
    "StepMetrics",
    "resolve_device",
    "synthetic_batches",
]

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]

SPARSE_OPTIMIZERS = ("adam", "rowwise-adagrad")
# ModelConfig fields added after checkpoints were written, with the value those had: an
# older checkpoint names its true shape in the mismatch error (set these to keep it).
_FIELDS_BEFORE_THEY_EXISTED = {"views": 1, "neighbours": 0}
_FULL_EVAL_PAIRS = 2_000_000  # candidates x history entries scored per chunk (bounds memory)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    learning_rate: float = 1e-3  # Adam, dense layers
    sparse_learning_rate: float = 0.01  # embedding tables (with ``sparse_optimizer``)
    # "adam": SparseAdam (lazy Adam: only the batch's rows move); "rowwise-adagrad": one
    # Adagrad accumulator per row (``freshrank.model.sparse_optim``), each row's step
    # shrinking with its own evidence only: what rare items need (docs/quality-log.md).
    sparse_optimizer: str = "adam"
    prior_learning_rate: float = 0.01  # Adam, a model's few global prior parameters
    negatives: int = 100  # sampled-evaluation negatives per event
    train_negatives: int = 16  # sampled-softmax negatives per training positive
    replay_size: int = 20_000  # recent positives kept for replay
    replay_ratio: float = 0.5  # replayed positives per new positive in each step
    replay_half_life: float = 20_000.0  # events: a replayed positive's weight halves per this age
    full_eval_events: int = 16  # events per batch ranked against the whole catalogue
    metrics_window: int = 10_000  # events in the rolling prequential metrics
    device: str = "auto"  # "auto": cuda if available, else cpu
    mixed_precision: bool = True  # bf16 autocast on CUDA (never on CPU)
    popularity_half_life: float = 20_000.0  # events: decay of a model's popularity prior
    shared_negatives: bool = False  # True: one set of train_negatives for the whole batch
    # With shared negatives: the batch's own positives are negatives for the other rows too
    # (popular, hard ones), every logit corrected by log of its expected count in the
    # sample (logQ, Yi et al. 2019), so the model still learns p(item | user).
    in_batch_negatives: bool = False
    train_steps: int = 1  # gradient steps per micro-batch, each on it plus a fresh replay
    seed: int = 0

    def __post_init__(self) -> None:
        if self.negatives < 1 or self.train_negatives < 1 or self.train_steps < 1:
            raise ValueError("negatives, train_negatives and train_steps must be >= 1")
        if self.replay_size < 0 or self.replay_ratio < 0 or self.full_eval_events < 0:
            raise ValueError("replay_size, replay_ratio and full_eval_events must be >= 0")
        if self.sparse_optimizer not in SPARSE_OPTIMIZERS:
            known = ", ".join(SPARSE_OPTIMIZERS)
            raise ValueError(f"unknown sparse_optimizer {self.sparse_optimizer!r} ({known})")


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """One micro-batch: its prequential metrics (scored before training) and cost."""

    events: int
    hr10: float
    ndcg10: float
    hr10_full: float  # NaN when no event of the batch was ranked against the full catalogue
    ndcg10_full: float
    loss: float  # NaN when the batch was not trained on
    seconds: float
    full_events: int = 0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclasses.dataclass(frozen=True)
class _Batch:
    user_ids: list[str]
    item_ids: list[str]
    times: Rows  # timestamp_ms per event
    timestamp_ms: int


class PrequentialLearner:
    """ID maps, histories, evaluation and metrics; subclasses say how to score and learn."""

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        model = config.model
        self.users = IdMap(model.num_users)
        self.items = IdMap(model.num_items)
        self.histories = UserHistories(model.num_users, model.history_len)
        self.seen = SeenPairs(model.num_items)  # past (user, item) pairs: never negatives
        self.last_ranks: Rows = np.zeros(0, dtype=np.int64)
        self.metrics = RollingMetrics(config.metrics_window)
        self.rng = np.random.default_rng(config.seed)
        self.frozen = False  # True: keep scoring and tracking IDs/histories, stop learning
        self.steps = 0
        self.events_seen = 0
        self.events_trained = 0
        self.last_event_timestamp_ms = 0

    # -- what subclasses provide ------------------------------------------------------------

    def score(self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows) -> Scores:
        """Scores [B, C] of candidates for users with their histories."""
        raise NotImplementedError

    def learn(self, user_rows: Rows, item_rows: Rows, history_rows: Rows) -> float | None:
        """Update on a batch of positives; returns the loss (None: no loss to report)."""
        raise NotImplementedError

    def forget_rows(self, users: list[int], items: list[int]) -> None:
        """Rows evicted from the ID maps: re-initialise whatever they held."""

    # -- the prequential loop ---------------------------------------------------------------

    def step(self, events: Sequence[InteractionEvent]) -> StepMetrics:
        """Score the batch with the current state, then learn from it."""
        start = time.perf_counter()
        if not events:
            return StepMetrics(0, np.nan, np.nan, np.nan, np.nan, np.nan, 0.0)
        batch = _to_batch(events)
        known_users = self.users.rows(batch.user_ids)
        known_items = self.items.rows(batch.item_ids)
        user_rows, item_rows = self._assign(batch)
        # Learning (after scoring) also reads a user's simultaneous events in stream order
        # as history: items bought the same day are the co-purchase signal, and once scored
        # they are the past. Scoring still sees strictly earlier events only.
        train_histories = self.histories.before_each(user_rows, item_rows, record=False)
        histories = self.histories.before_each(user_rows, item_rows, batch.times)
        new_items = np.unique(item_rows[known_items == PADDING_ROW])
        catalogue = np.setdiff1d(self.items.active_rows(), new_items, assume_unique=True)
        # Scored as of the batch start: IDs first seen in this batch are unknown (row 0).
        eval_histories = compact_rows(np.where(np.isin(histories, new_items), 0, histories))
        hr, ndcg, hr_full, ndcg_full, full_events = self._evaluate(
            known_users, user_rows, eval_histories, known_items, catalogue
        )
        loss = None if self.frozen else self.learn(user_rows, item_rows, train_histories)
        if not self.frozen:
            self.events_trained += len(events)
        self.seen.add(user_rows, item_rows)
        self._after_learning(user_rows, item_rows, histories)
        return self._record(batch, hr, ndcg, hr_full, ndcg_full, full_events, loss, start)

    def evaluate_only(self, events: Sequence[InteractionEvent]) -> StepMetrics:
        """Score the batch and record its metrics; learn nothing, track nothing."""
        start = time.perf_counter()
        if not events:
            return StepMetrics(0, np.nan, np.nan, np.nan, np.nan, np.nan, 0.0)
        batch = _to_batch(events)
        users = self.users.rows(batch.user_ids)
        items = self.items.rows(batch.item_ids)
        histories = self.histories.before_each(users, items, batch.times, record=False)
        hr, ndcg, hr_full, ndcg_full, full_events = self._evaluate(
            users, users, histories, items, self.items.active_rows()
        )
        return self._record(batch, hr, ndcg, hr_full, ndcg_full, full_events, None, start)

    def freeze(self) -> None:
        self.frozen = True

    @property
    def rolling(self) -> dict[str, float]:
        return self.metrics.rolling

    @property
    def total(self) -> dict[str, float]:
        return self.metrics.total

    def id_stats(self) -> dict[str, int]:
        return {
            "users_known": len(self.users),
            "items_known": len(self.items),
            "user_capacity": self.users.capacity,
            "item_capacity": self.items.capacity,
            "user_evictions": self.users.evictions,
            "item_evictions": self.items.evictions,
            "user_oversized": self.users.oversized,
            "item_oversized": self.items.oversized,
            # Every active ID owns its row (IdMap is a dict, not a hash), so this is 0 by
            # construction; it is counted rather than asserted so a regression would show.
            "collisions": _collisions(self.users) + _collisions(self.items),
        }

    def model_stats(self) -> dict[str, float]:
        """What the model chose online, for the trainer's metrics; none here."""
        return {}

    # -- evaluation -------------------------------------------------------------------------

    def _evaluate(
        self, users: Rows, owners: Rows, histories: Rows, items: Rows, catalogue: Rows
    ) -> tuple[float, float, float, float, int]:
        """Sums of HR/NDCG (sampled, full) over the batch; ``owners`` key the seen pairs."""
        rng = np.random.default_rng([self.config.seed, self.steps, 1])  # same for all learners
        if len(catalogue) == 0:
            self.last_ranks = np.full(len(users), self.config.negatives, dtype=np.int64)
            return 0.0, 0.0, np.nan, np.nan, 0
        negatives, valid = self._negatives(rng, owners, histories, items, catalogue)
        candidates = np.concatenate([items[:, None], negatives], axis=1)
        scores = self.score_sampled(users, histories, candidates, valid)
        ranks = ranks_of_true(scores[:, 0], scores[:, 1:], valid)
        self.last_ranks = ranks  # per event, in batch order (tests check what each event saw)
        hr, ndcg = float(hit_rate_at_k(ranks).sum()), float(ndcg_at_k(ranks).sum())
        count = min(self.config.full_eval_events, len(users))
        if count == 0:
            return hr, ndcg, 0.0, 0.0, 0
        chosen = np.sort(rng.choice(len(users), size=count, replace=False))
        full_ranks = self._full_ranks(
            users[chosen], owners[chosen], histories[chosen], items[chosen], catalogue
        )
        return (
            hr,
            ndcg,
            float(hit_rate_at_k(full_ranks).sum()),
            float(ndcg_at_k(full_ranks).sum()),
            count,
        )

    def _excluded(self, owners: Rows, histories: Rows, candidates: Rows) -> npt.NDArray[np.bool_]:
        """[B, C]: candidates the user met before (seen pairs, or earlier in this batch)."""
        past = self.seen.contains(owners[:, None], candidates)
        in_history = (candidates[:, :, None] == histories[:, None, :]).any(axis=2)
        excluded: npt.NDArray[np.bool_] = past | (in_history & (candidates != PADDING_ROW))
        return excluded

    def _negatives(
        self, rng: np.random.Generator, owners: Rows, histories: Rows, items: Rows, catalogue: Rows
    ) -> tuple[Rows, npt.NDArray[np.bool_]]:
        """[B, N] negatives without replacement, none the true or an already-met item.

        Oversampled draws with duplicates and met items dropped (uniform without
        replacement, as every kept draw is a first occurrence in random order); rows left
        short fall back to an exact draw from the allowed pool. ``valid`` marks slots filled
        (a user who met nearly the whole catalogue gets fewer negatives).
        """
        wanted = self.config.negatives
        draws = catalogue[rng.integers(0, len(catalogue), (len(items), 2 * wanted + 16))]
        ok = _first_occurrences(draws) & (draws != items[:, None])
        ok &= ~self._excluded(owners, histories, draws)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :wanted]
        negatives = np.take_along_axis(draws, order, axis=1)
        valid = np.take_along_axis(ok, order, axis=1)
        short = np.flatnonzero(~valid.all(axis=1))
        if len(short):
            pool = np.broadcast_to(catalogue, (len(short), len(catalogue)))
            allowed = (pool != items[short, None]) & ~self._excluded(
                owners[short], histories[short], np.ascontiguousarray(pool)
            )
            keys = np.where(allowed, rng.random(pool.shape), np.inf)
            picked = np.argsort(keys, axis=1)[:, :wanted]
            filled = np.take_along_axis(allowed, picked, axis=1)
            width = picked.shape[1]
            negatives[short] = 0
            valid[short] = False
            negatives[short, :width] = np.where(filled, catalogue[picked], 0)
            valid[short, :width] = filled
        return negatives, valid

    def _full_ranks(
        self, users: Rows, owners: Rows, histories: Rows, items: Rows, catalogue: Rows
    ) -> Rows:
        true_scores = self.score(users, histories, items[:, None])[:, 0]
        ranks = np.zeros(len(users), dtype=np.int64)
        per_chunk = max(1, _FULL_EVAL_PAIRS // max(1, len(users) * histories.shape[1]))
        for start in range(0, len(catalogue), per_chunk):
            chunk = catalogue[start : start + per_chunk]
            candidates = np.ascontiguousarray(np.broadcast_to(chunk, (len(users), len(chunk))))
            scores = self.score(users, histories, candidates)
            valid = (candidates != items[:, None]) & ~self._excluded(owners, histories, candidates)
            ranks += ranks_of_true(true_scores, scores, valid)
        return ranks

    # -- tracking ---------------------------------------------------------------------------

    def _assign(self, batch: _Batch) -> tuple[Rows, Rows]:
        user_rows, evicted_users = self.users.assign(batch.user_ids)
        item_rows, evicted_items = self.items.assign(batch.item_ids)
        if evicted_users or evicted_items:
            self.histories.reset_users(evicted_users)
            self.histories.drop_items(evicted_items)
            self.seen.forget(evicted_users, evicted_items)
            self.forget_rows(evicted_users, evicted_items)
        return user_rows, item_rows

    def score_sampled(
        self, users: Rows, histories: Rows, candidates: Rows, valid: npt.NDArray[np.bool_]
    ) -> Scores:
        """``score`` of a batch's sampled candidates (true item first, ``valid`` slots),
        before anything learns from it: where a learner may tally its prequential hits."""
        return self.score(users, histories, candidates)

    def _after_learning(self, user_rows: Rows, item_rows: Rows, histories: Rows) -> None:
        """Hook after each step's learning (the replay buffer lives here)."""

    def _record(
        self,
        batch: _Batch,
        hr: float,
        ndcg: float,
        hr_full: float,
        ndcg_full: float,
        full_events: int,
        loss: float | None,
        start: float,
    ) -> StepMetrics:
        events = len(batch.user_ids)
        self.metrics.add(
            hits=hr,
            ndcg=ndcg,
            events=events,
            hits_full=hr_full if full_events else 0.0,
            ndcg_full=ndcg_full if full_events else 0.0,
            full_events=full_events,
            loss=loss,
        )
        self.steps += 1
        self.events_seen += events
        self.last_event_timestamp_ms = max(self.last_event_timestamp_ms, batch.timestamp_ms)
        return StepMetrics(
            events=events,
            hr10=hr / events,
            ndcg10=ndcg / events,
            hr10_full=hr_full / full_events if full_events else np.nan,
            ndcg10_full=ndcg_full / full_events if full_events else np.nan,
            loss=np.nan if loss is None else loss,
            seconds=time.perf_counter() - start,
            full_events=full_events,
        )

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "users": self.users.state_dict(),
            "items": self.items.state_dict(),
            "histories": self.histories.state_dict(),
            "seen": self.seen.state_dict(),
            "metrics": self.metrics.state_dict(),
            "rng": self.rng.bit_generator.state,
            "frozen": self.frozen,
            "steps": self.steps,
            "events_seen": self.events_seen,
            "events_trained": self.events_trained,
            "last_event_timestamp_ms": self.last_event_timestamp_ms,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.users = IdMap.from_state_dict(state["users"])
        self.items = IdMap.from_state_dict(state["items"])
        histories = state["histories"]
        if isinstance(histories, dict):
            self.histories.load_state_dict(histories)
        else:  # a checkpoint from before tie-aware histories: the bare table
            self.histories.load_state_dict({"table": histories})
        if "seen" in state:
            self.seen.load_state_dict(state["seen"])
        self.metrics.load_state_dict(state["metrics"])
        self.rng.bit_generator.state = state["rng"]
        self.frozen = bool(state["frozen"])
        self.steps = int(state["steps"])
        self.events_seen = int(state["events_seen"])
        self.events_trained = int(state["events_trained"])
        self.last_event_timestamp_ms = int(state["last_event_timestamp_ms"])

    def ids_json(self) -> dict[str, Any]:
        """The ``ids.json`` of an export: both ID maps (the history length and architecture
        are the export manifest's, ``core.contracts.manifest``)."""
        return {"users": self.users.to_json(), "items": self.items.to_json()}


class OnlineLearner(PrequentialLearner):
    """A PyTorch ranking model (any registered architecture) trained online."""

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(config)
        self.device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model: RankingModel = build_model(config.model)
        self.model.to(self.device)
        embeddings = [m for m in self.model.modules() if isinstance(m, nn.Embedding)]
        for embedding in embeddings:
            embedding.sparse = True
        sparse_ids = {id(p) for m in embeddings for p in m.parameters()}
        sparse = [p for p in self.model.parameters() if id(p) in sparse_ids]
        dense = [p for p in self.model.parameters() if id(p) not in sparse_ids]
        # A model's global prior parameters (a few scalars every step moves) learn at a fast
        # rate: at the layers' rate they would take the whole stream to adapt.
        fast_ids = {id(p) for p in self.model.prior_parameters()}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in dense if id(p) not in fast_ids]},
            {"params": [p for p in dense if id(p) in fast_ids], "lr": config.prior_learning_rate},
        ]
        dense_groups = [group for group in groups if group["params"]]
        self.sparse_optimizer = _sparse_optimizer(config, sparse)
        self.dense_optimizer = (
            torch.optim.Adam(dense_groups, lr=config.learning_rate) if dense_groups else None
        )
        self.replay = ReplayBuffer(
            config.replay_size, config.model.history_len, config.replay_half_life
        )
        self._autocast = self.device.type == "cuda" and config.mixed_precision
        self.frequency = np.zeros(config.model.num_items, dtype=np.float64)  # for logQ
        # The published (exported) copy that scores, when serving lags training; None: live.
        self.serving: RankingModel | None = None

    def publish(self) -> None:
        """Score from now on with a frozen copy of the model as it is (what an export does)."""
        if self.serving is None:
            self.serving = copy.deepcopy(self.model)
        else:
            self.serving.load_state_dict(self.model.state_dict())
        self.serving.eval()

    def score(self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows) -> Scores:
        model = self._scoring_model()
        with torch.inference_mode(), self._precision():
            scores = model(*self._inputs(user_rows, history_rows, candidate_rows))
        result: Scores = scores.float().cpu().numpy()
        return result

    def _scoring_model(self) -> RankingModel:
        """The published copy when serving lags training, else the live model; in eval mode."""
        model = self.serving if self.serving is not None else self.model
        model.eval()
        return model

    def _inputs(
        self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward``'s three inputs on the device."""
        return (
            self._tensor(user_rows[:, None]),
            self._tensor(history_rows),
            self._tensor(candidate_rows),
        )

    def learn(self, user_rows: Rows, item_rows: Rows, history_rows: Rows) -> float | None:
        self._count_positives(item_rows)
        losses = []
        for _ in range(self.config.train_steps):
            batch = self._with_replay(user_rows, item_rows, history_rows)
            losses.append(self._train_step(*batch))
        return float(np.mean(losses))

    def _train_step(self, users: Rows, items: Rows, histories: Rows) -> float:
        """One sampled-softmax step on positives ``items`` (the batch plus a replay)."""
        catalogue = self.items.active_rows()
        self.model.train()
        with self._precision():
            if self.config.shared_negatives:
                logits, items, negatives = self._shared_logits(users, items, histories, catalogue)
            else:
                negatives = catalogue[
                    self.rng.integers(0, len(catalogue), (len(users), self.config.train_negatives))
                ]
                candidates = np.concatenate([items[:, None], negatives], axis=1)
                logits = self.model(
                    self._tensor(users[:, None]), self._tensor(histories), self._tensor(candidates)
                ).float()
        accidental = self._tensor(negatives == items[:, None])
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(accidental, -1e9)], dim=1)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=self.device)
        loss = nn.functional.cross_entropy(logits, target)
        self.sparse_optimizer.zero_grad(set_to_none=True)
        if self.dense_optimizer is not None:
            self.dense_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.sparse_optimizer.step()
        if self.dense_optimizer is not None:
            self.dense_optimizer.step()
        return float(loss.detach())

    def _shared_logits(
        self, users: Rows, items: Rows, histories: Rows, catalogue: Rows
    ) -> tuple[torch.Tensor, Rows, npt.NDArray[np.int64]]:
        """Logits [N, 1+S] against one sample S shared by the batch; targets; [N, S] rows.

        S = ``train_negatives`` uniform draws, plus the batch's positives with
        ``in_batch_negatives``. With in-batch negatives every logit is corrected by the log
        of its item's expected count in S (uniform share + batch size x stream frequency),
        so popular items, sampled far more often, are not pushed down for it.
        """
        uniform = catalogue[self.rng.integers(0, len(catalogue), self.config.train_negatives)]
        shared = np.concatenate([items, uniform]) if self.config.in_batch_negatives else uniform
        positives, history_tensor = self._tensor(items), self._tensor(histories)
        logits = self.model.train_scores(
            self._tensor(users[:, None]), history_tensor, positives, self._tensor(shared)
        ).float()
        # A model may train several (state, next item) pairs per event (SASRec).
        targets = self.model.train_targets(positives, history_tensor).cpu().numpy()
        if self.config.in_batch_negatives:
            log_q = self._log_expected_counts(len(items), len(catalogue))
            logits = torch.cat(
                [
                    logits[:, :1] - log_q[self._tensor(targets)].unsqueeze(1),
                    logits[:, 1:] - log_q[self._tensor(shared)].unsqueeze(0),
                ],
                dim=1,
            )
        negatives = np.broadcast_to(shared, (len(targets), len(shared)))
        return logits, targets, negatives

    def _count_positives(self, item_rows: Rows) -> None:
        """Decayed positive counts per item row: the stream frequency the logQ term needs."""
        if not self.config.in_batch_negatives:
            return
        self.frequency *= np.exp2(-len(item_rows) / self.config.popularity_half_life)
        np.add.at(self.frequency, item_rows, 1.0)

    def _log_expected_counts(self, positives: int, catalogue: int) -> torch.Tensor:
        """log E[times each row is in the shared sample]: uniform draws + in-batch positives."""
        frequency = self.frequency / max(float(self.frequency.sum()), 1.0)
        expected = self.config.train_negatives / max(catalogue, 1) + positives * frequency
        return self._tensor(np.log(np.maximum(expected, 1e-12)).astype(np.float32))

    def forget_rows(self, users: list[int], items: list[int]) -> None:
        self.model.reset_rows("user", users)
        self.model.reset_rows("item", items)
        _reset_bias_rows(self.model, items)
        _reset_optimizer_rows(self.sparse_optimizer, self.model, users, items)
        self.frequency[items] = 0.0
        self.replay.invalidate(users, items)

    def model_stats(self) -> dict[str, float]:
        memory = self.model.memory()
        return {} if memory is None else {"knn_weight": memory.chosen_weight()}

    def score_sampled(
        self, users: Rows, histories: Rows, candidates: Rows, valid: npt.NDArray[np.bool_]
    ) -> Scores:
        """With a kNN term (``freshrank.model.knn``): also tally the hits each weight of the
        grid would have had here, the model's scores re-ranked with the term at every weight."""
        model = self._scoring_model()
        memory, tally = model.memory(), self.model.memory()
        if memory is None or tally is None or self.frozen:
            return self.score(users, histories, candidates)
        inputs = self._inputs(users, histories, candidates)
        with torch.inference_mode(), self._precision():
            base = model.model_scores(*inputs).float().cpu().numpy()
            term = memory(*inputs).float().cpu().numpy()
        hits = [
            hit_rate_at_k(ranks_of_true(each[:, 0], each[:, 1:], valid)).sum()
            for each in (base + weight * term for weight in WEIGHT_GRID)
        ]
        tally.record_hits(torch.tensor(hits))
        scores: Scores = base + memory.chosen_weight() * term
        return scores

    def _after_learning(self, user_rows: Rows, item_rows: Rows, histories: Rows) -> None:
        if not self.frozen:
            decay = float(np.exp2(-len(item_rows) / self.config.popularity_half_life))
            self.model.observe_items(self._tensor(item_rows), decay)
            self.model.observe_pairs(self._tensor(user_rows), self._tensor(item_rows))
        seen_at = self.events_seen + np.arange(len(user_rows), dtype=np.int64)
        self.replay.add(user_rows, item_rows, histories, seen_at)

    def _with_replay(self, users: Rows, items: Rows, histories: Rows) -> tuple[Rows, Rows, Rows]:
        count = round(len(users) * self.config.replay_ratio)
        sample = self.replay.sample(count, self.events_seen, self.rng)
        if sample is None:
            return users, items, histories
        return (
            np.concatenate([users, sample[0]]),
            np.concatenate([items, sample[1]]),
            np.concatenate([histories, sample[2]]),
        )

    def _tensor(self, array: npt.NDArray[Any]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _precision(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self._autocast
        )

    # -- checkpoints and export -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["model"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        state["sparse_optimizer"] = _optimizer_state_to_cpu(self.sparse_optimizer.state_dict())
        if self.dense_optimizer is not None:
            state["dense_optimizer"] = _optimizer_state_to_cpu(self.dense_optimizer.state_dict())
        state["replay"] = self.replay.state_dict()
        state["frequency"] = torch.from_numpy(self.frequency.copy())
        state["config"] = dataclasses.asdict(self.config)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {}).get("model")
        if saved is not None:  # a checkpoint from before a field existed had its old value
            saved = {**_FIELDS_BEFORE_THEY_EXISTED, **saved}
        if saved is not None and saved != dataclasses.asdict(self.config.model):
            raise ValueError(f"checkpoint is for model {saved}, not {self.config.model}")
        super().load_state_dict(state)
        self.model.load_state_dict(state["model"])
        # A checkpoint of another sparse optimizer (SparseAdam before row-wise Adagrad became
        # sasrec's) holds state this one cannot use: its rows start afresh, weights kept.
        if state.get("config", {}).get("sparse_optimizer", "adam") == self.config.sparse_optimizer:
            self.sparse_optimizer.load_state_dict(state["sparse_optimizer"])
        if self.dense_optimizer is not None:
            self.dense_optimizer.load_state_dict(state["dense_optimizer"])
        self.replay.load_state_dict(state["replay"])
        if "frequency" in state:  # absent in checkpoints from before in-batch negatives
            self.frequency = np.array(state["frequency"], dtype=np.float64)

    def export(self, directory: Path) -> None:
        """Write ``model.pt`` (TorchScript, verified after reloading), ``export.json`` and
        the ID tables (``freshrank.model.export``)."""
        export_version(self.model, directory, self.ids_json())


def synthetic_batches(
    batch_size: int,
    *,
    users: int = 1000,
    items: int = 500,
    topics: int = 10,
    events: int = 50_000,
    seed: int = 7,
    drift_at: float | None = None,
) -> Iterator[list[InteractionEvent]]:
    """Micro-batches of a ``SyntheticStream`` in memory (the trainer benchmark's peer loop)."""
    from freshrank.sim.synthetic import SyntheticConfig, SyntheticStream

    stream = SyntheticStream(
        SyntheticConfig(
            users=users, items=items, topics=topics, events=events, seed=seed, drift_at=drift_at
        )
    )
    batch: list[InteractionEvent] = []
    for event in stream.events():
        batch.append(event)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _to_batch(events: Sequence[InteractionEvent]) -> _Batch:
    times = np.fromiter((int(e.timestamp_ms) for e in events), dtype=np.int64, count=len(events))
    return _Batch(
        user_ids=[e.user_id for e in events],
        item_ids=[e.item_id for e in events],
        times=times,
        timestamp_ms=int(times.max()),
    )


def _first_occurrences(rows: Rows) -> npt.NDArray[np.bool_]:
    """[B, M]: True where the value does not occur earlier in its row."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def _collisions(table: IdMap) -> int:
    rows = table.rows(table.known_ids())
    return len(rows) - len(np.unique(rows)) + int((rows == PADDING_ROW).sum())


def _reset_bias_rows(model: RankingModel, rows: list[int]) -> None:
    bias = getattr(model, "item_bias", None)
    if isinstance(bias, nn.Embedding) and rows:
        with torch.no_grad():
            bias.weight[torch.tensor(rows, dtype=torch.long, device=bias.weight.device)] = 0.0


def _sparse_optimizer(config: LearnerConfig, tables: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.sparse_optimizer == "rowwise-adagrad":
        return RowWiseAdagrad(tables, lr=config.sparse_learning_rate)
    return torch.optim.SparseAdam(tables, lr=config.sparse_learning_rate)


def _reset_optimizer_rows(
    optimizer: torch.optim.Optimizer, model: RankingModel, users: list[int], items: list[int]
) -> None:
    """Zero the optimizer state of evicted rows (Adam's moments, Adagrad's accumulator), so a
    new ID does not inherit the old one's momentum or step size."""
    rows_of = {"user_embedding": users, "item_embedding": items, "item_bias": items}
    for name, rows in rows_of.items():
        module = getattr(model, name, None)
        if not isinstance(module, nn.Embedding) or not rows:
            continue
        state = optimizer.state.get(module.weight, {})
        index = torch.tensor(rows, dtype=torch.long, device=module.weight.device)
        for key in ("exp_avg", "exp_avg_sq", "sum"):
            if key in state:
                state[key][index] = 0.0


def _optimizer_state_to_cpu(state: dict[str, Any]) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().clone()
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    moved: dict[str, Any] = move(state)
    return moved
