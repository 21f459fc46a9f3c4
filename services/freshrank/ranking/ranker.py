"""The ranking request path: features -> ID rows -> scorer -> top-k, or a flagged fallback.

Nothing a dependency does can fail the caller: no READY model, a late or dead Triton, or an
unreachable feature service each degrade to a defined answer (fallback or empty history),
counted in metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import numpy as np

from freshrank.core.id_table import PADDING_ROW
from freshrank.ranking.candidates import Retrieval
from freshrank.ranking.fallback import PopularityFallback, top_k
from freshrank.ranking.features import FeatureLookup
from freshrank.ranking.metrics import RankingMetrics
from freshrank.ranking.model_state import ModelState, ModelWatcher
from freshrank.ranking.scorer import Scorer
from freshrank.ranking.triton import Rows, ScoringUnavailable, VersionUnavailable

__all__ = ["RankQuery", "Ranker", "Ranking"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RankQuery:
    user_id: str
    k: int
    candidates: Sequence[str] | None = None  # None: retrieve
    context: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Ranking:
    item_ids: Sequence[str]
    scores: Sequence[float]
    model_version: int  # 0: no model served this answer
    fallback: bool


class Ranker:
    def __init__(
        self,
        *,
        watcher: ModelWatcher,
        scorer: Scorer,
        features: FeatureLookup,
        fallback: PopularityFallback,
        retrieval: Retrieval,
        metrics: RankingMetrics,
    ) -> None:
        self._watcher = watcher
        self._scorer = scorer
        self._features = features
        self._fallback = fallback
        self._retrieval = retrieval
        self._metrics = metrics

    async def rank(self, query: RankQuery) -> Ranking:
        model = self._watcher.serving
        if model is None:
            return self._fall_back(query, "no_ready_model")
        history = await self._features.history(query.user_id) or ()  # None: unavailable
        try:
            try:
                return await self._rank_with(model, query, history)
            except VersionUnavailable:
                # Triton swapped to a newer version since our last poll: rank once more on
                # it (with its own ID maps) rather than answering with a fallback.
                newer = await self._watcher.catch_up(model.version)
                if newer is None or newer.version == model.version:
                    raise
                return await self._rank_with(newer, query, history)
        except ScoringUnavailable as exc:
            log.debug("scoring unavailable", extra={"reason": exc.reason, "error": str(exc)})
            return self._fall_back(query, exc.reason)

    async def _rank_with(
        self, model: ModelState, query: RankQuery, history: Sequence[str]
    ) -> Ranking:
        if query.candidates is None:
            item_ids, item_rows = self._retrieval.candidates(model)
        else:
            item_ids = np.array(query.candidates, dtype=object)
            item_rows = model.item_rows(query.candidates)
        if item_ids.shape[0] == 0:
            return Ranking([], [], model.version, False)
        start = time.perf_counter()
        try:
            scores = await self._scorer.score(
                model.version,
                model.user_row(query.user_id),
                self._history_rows(model, history),
                item_rows,
            )
            if scores.shape != item_rows.shape:
                raise ScoringUnavailable("bad_output", f"scores shape {scores.shape}")
        except ScoringUnavailable as exc:
            self._observe_scorer(start, exc.reason)
            raise
        self._observe_scorer(start, "ok")
        order = top_k(scores, query.k)
        return Ranking(
            item_ids[order].tolist(), scores[order].tolist(), model.version, fallback=False
        )

    def _fall_back(self, query: RankQuery, reason: str) -> Ranking:
        self._metrics.fallbacks.labels(reason=reason).inc()
        items, scores = self._fallback.rank(query.candidates, query.k, self._watcher.last_known)
        return Ranking(items, scores, 0, fallback=True)

    def _observe_scorer(self, start: float, outcome: str) -> None:
        self._metrics.scorer_latency.labels(scorer=self._scorer.name, outcome=outcome).observe(
            time.perf_counter() - start
        )

    @staticmethod
    def _history_rows(model: ModelState, history: Sequence[str]) -> Rows:
        """Most recent first, mapped like the trainer mapped them, padded with row 0."""
        rows = np.full(model.history_len, PADDING_ROW, dtype=np.int64)
        recent = history[: model.history_len]
        if recent:
            rows[: len(recent)] = model.item_rows(recent)
        return rows
