"""Run one model or baseline prequentially over a dataset and summarise its metrics.

Every runner sees the same micro-batches and, because the evaluation candidates are seeded
per step (see ``freshrank.model.learner``), the same negatives: differences in the table are
differences between the models.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch

from freshrank.evaluation.datasets import Dataset
from freshrank.model.base import ModelConfig
from freshrank.model.baselines import PopularityLearner
from freshrank.model.learner import (
    LearnerConfig,
    OnlineLearner,
    PrequentialLearner,
    StepMetrics,
    resolve_device,
)
from freshrank.model.registry import LEARNER_DEFAULTS

__all__ = [
    "MODELS",
    "NEVER",
    "EvalSettings",
    "RunResult",
    "Segment",
    "learner_config",
    "run_model",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSettings:
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    dim: int = 32
    history_len: int = 20
    views: int = ModelConfig.views  # sasrec's item-table views
    neighbours: int = ModelConfig.neighbours  # sasrec's kNN term (0: none)
    negatives: int = 100
    full_eval_events: int = 16
    static_fraction: float = 0.2  # the static model trains on this prefix, then never again
    series_points: int = 20


@dataclasses.dataclass(frozen=True)
class Segment:
    """Metrics over a range of the stream (events scored there, before training on them)."""

    events: int
    hr10: float
    ndcg10: float
    hr10_full: float
    ndcg10_full: float

    @classmethod
    def of(cls, steps: Sequence[StepMetrics]) -> Segment:
        events = sum(s.events for s in steps)
        full = sum(s.full_events for s in steps)

        def mean(values: list[float], weights: list[int], total: int) -> float:
            if not total:
                return math.nan
            return sum(v * w for v, w in zip(values, weights, strict=True) if w) / total

        return cls(
            events=events,
            hr10=mean([s.hr10 for s in steps], [s.events for s in steps], events),
            ndcg10=mean([s.ndcg10 for s in steps], [s.events for s in steps], events),
            hr10_full=mean([s.hr10_full for s in steps], [s.full_events for s in steps], full),
            ndcg10_full=mean([s.ndcg10_full for s in steps], [s.full_events for s in steps], full),
        )


@dataclasses.dataclass(frozen=True)
class RunResult:
    model: str
    overall: Segment
    after_static_cut: Segment  # events after the static model stopped training
    after_drift: Segment | None  # events after the planted drift (synthetic)
    seconds: float
    events_per_second: float
    series: list[dict[str, float]]  # rolling metrics along the stream
    id_stats: dict[str, int]
    optimizer: str
    seed: int = 0


def learner_config(settings: EvalSettings, dataset: Dataset, architecture: str) -> LearnerConfig:
    """A learner's config for ``dataset`` under ``settings``, before an architecture's
    ``LEARNER_DEFAULTS`` (the benchmarks' side-by-side runs start from it too)."""
    model = ModelConfig.from_settings(
        settings,  # dim, history_len, views, neighbours
        architecture=architecture,
        num_users=dataset.users + 1,  # + row 0: every ID owns a row, no evictions in eval
        num_items=dataset.items + 1,
    )
    return LearnerConfig(
        model=model,
        negatives=settings.negatives,
        full_eval_events=settings.full_eval_events,
        device=settings.device,
        seed=settings.seed,
    )


def _popularity(config: LearnerConfig) -> PrequentialLearner:
    return PopularityLearner(config)


def _online(architecture: str) -> Callable[[LearnerConfig], PrequentialLearner]:
    def build(config: LearnerConfig) -> PrequentialLearner:
        model = dataclasses.replace(config.model, architecture=architecture)
        overrides = LEARNER_DEFAULTS.get(architecture, {})
        return OnlineLearner(dataclasses.replace(config, model=model, **overrides))  # type: ignore[arg-type]

    return build


# name -> (builder, frozen after the static prefix?). Each architecture has its static twin
# (same model, trained on the first 20 %, then frozen): comparing a model with its own static
# twin isolates freshness from architecture.
MODELS: dict[str, tuple[Callable[[LearnerConfig], PrequentialLearner], bool]] = {
    "popularity": (_popularity, False),
    "static": (_online("mf"), True),  # the original name of static-mf
    "static-mf": (_online("mf"), True),
    "static-din": (_online("din"), True),
    "static-sasrec": (_online("sasrec"), True),
    "mf": (_online("mf"), False),
    "din": (_online("din"), False),
    "sasrec": (_online("sasrec"), False),
}


NEVER = -1  # publish_every: serve the model published at the static cut, forever


def run_model(
    name: str,
    dataset: Dataset,
    settings: EvalSettings,
    on_progress: Callable[[int], None] | None = None,
    *,
    publish_every: int | None = None,
) -> RunResult:
    """Replay ``dataset`` through model ``name``; returns its prequential metrics.

    ``publish_every``: None scores with the live model (updated every micro-batch); N > 0
    scores with a copy published whenever N more events were trained (an export interval);
    ``NEVER`` publishes once at the static cut. Training goes on every batch in all cases.
    """
    try:
        build, static = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None
    learner = build(learner_config(settings, dataset, "mf"))
    events = dataset.events
    cut = int(len(events) * settings.static_fraction)
    every = max(1, len(events) // max(1, settings.series_points))
    steps: list[StepMetrics] = []
    starts: list[int] = []
    series: list[dict[str, float]] = []
    start = time.perf_counter()
    next_point = every
    published_at = -(publish_every or 0)  # the first batch publishes (the initial export)
    for offset in range(0, len(events), settings.batch_size):
        if static and offset >= cut:
            learner.freeze()
        if publish_every is not None and isinstance(learner, OnlineLearner):
            due = (
                offset >= cut if publish_every == NEVER else offset - published_at >= publish_every
            )
            if due and (publish_every != NEVER or learner.serving is None):
                learner.publish()
                published_at = offset
        starts.append(offset)
        steps.append(learner.step(events[offset : offset + settings.batch_size]))
        done = offset + steps[-1].events
        if done >= next_point or done == len(events):
            series.append({"events": float(done), **learner.rolling})
            next_point += every
            if on_progress is not None:
                on_progress(done)
    seconds = time.perf_counter() - start
    drift = dataset.drift_index
    return RunResult(
        model=name,
        overall=Segment.of(steps),
        after_static_cut=Segment.of([s for s, o in zip(steps, starts, strict=True) if o >= cut]),
        after_drift=(
            Segment.of([s for s, o in zip(steps, starts, strict=True) if o >= drift])
            if drift is not None
            else None
        ),
        seconds=seconds,
        events_per_second=len(events) / seconds if seconds else math.nan,
        series=series,
        id_stats=learner.id_stats(),
        optimizer=_optimizer_name(learner),
        seed=settings.seed,
    )


def _optimizer_name(learner: PrequentialLearner) -> str:
    if isinstance(learner, OnlineLearner):
        dense = type(learner.dense_optimizer).__name__ if learner.dense_optimizer else "-"
        return f"{type(learner.sparse_optimizer).__name__} (embeddings) + {dense} (dense)"
    return "decayed counts"


def device_name(settings: EvalSettings) -> str:
    device = resolve_device(settings.device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
