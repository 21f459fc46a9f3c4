"""Where a model's HR@10 beats the popularity baseline's, event by event.

Runs the model and ``popularity`` side by side over one stream with ``freshrank eval``'s
protocol (the same micro-batches and, seeded per step, the same sampled candidates) and
splits the events by the history each was scored with, by popularity's rank of the true
item, and by position in the stream. ``--set KEY=VALUE`` overrides a ``LearnerConfig``
field on top of the architecture's ``LEARNER_DEFAULTS`` (JSON values), so a learner
experiment needs no edit of the defaults.

Usage:
  PYTHONPATH=services python benchmarks/eval_gap.py --dataset amazon-beauty
  PYTHONPATH=services python benchmarks/eval_gap.py --set replay_ratio=0.25 --set seed=1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from freshrank.evaluation.datasets import Dataset, load_dataset
from freshrank.evaluation.runner import EvalSettings, learner_config
from freshrank.model.baselines import PopularityLearner
from freshrank.model.learner import LearnerConfig, OnlineLearner
from freshrank.model.registry import LEARNER_DEFAULTS

Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class _Popularity(PopularityLearner):
    """The baseline, also noting how many history items each scored event had."""

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(config)
        self.history_lengths: Rows = np.zeros(0, dtype=np.int64)

    def _evaluate(
        self, users: Rows, owners: Rows, histories: Rows, items: Rows, catalogue: Rows
    ) -> tuple[float, float, float, float, int]:
        self.history_lengths = (histories != 0).sum(axis=1)
        return super()._evaluate(users, owners, histories, items, catalogue)


def _override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key, parsed


def _configs(
    args: argparse.Namespace, settings: EvalSettings, dataset: Dataset
) -> tuple[LearnerConfig, LearnerConfig]:
    """The baseline's config and the model's (defaults plus ``--set``), one seed for both:
    the evaluation candidates are seeded by it."""
    overrides = {**LEARNER_DEFAULTS.get(args.model, {}), **dict(args.set)}
    seed = int(overrides.get("seed", settings.seed))
    base = learner_config(
        dataclasses.replace(settings, device="cpu", seed=seed), dataset, args.model
    )
    return base, dataclasses.replace(base, **overrides)


def _ratio(model: float, popularity: float) -> str:
    return f"{model / popularity:.3f}" if popularity else "-"


def _print_split(title: str, parts: list[tuple[str, Mask]], pop: Mask, model: Mask) -> None:
    print(f"\n| {title} | share | popularity | model | ratio |\n| --- | --- | --- | --- | --- |")
    for name, part in parts:
        if part.any():
            p, m = float(pop[part].mean()), float(model[part].mean())
            print(f"| {name} | {part.mean():.3f} | {p:.4f} | {m:.4f} | {_ratio(m, p)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--model", default="sasrec", help="an architecture (mf, din, sasrec)")
    parser.add_argument("--set", type=_override, action="append", default=[], metavar="K=V")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--window", type=int, default=20_000, help="events per stream window")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset, args.limit)
    settings = EvalSettings()
    base, config = _configs(args, settings, dataset)
    popularity, model = _Popularity(base), OnlineLearner(config)
    lengths, pop_ranks, model_ranks = [], [], []
    for start in range(0, len(dataset.events), settings.batch_size):
        batch = dataset.events[start : start + settings.batch_size]
        popularity.step(batch)
        model.step(batch)
        lengths.append(popularity.history_lengths)
        pop_ranks.append(popularity.last_ranks)
        model_ranks.append(model.last_ranks)
    history = np.concatenate(lengths)
    pop_rank = np.concatenate(pop_ranks)
    pop_hit, model_hit = pop_rank < 10, np.concatenate(model_ranks) < 10
    position = np.arange(len(history))
    cut = int(len(history) * settings.static_fraction)
    print(f"{dataset.name}, {args.model} {dict(args.set)} vs popularity (HR@10)")
    everything = np.ones(len(history), dtype=bool)
    _print_split(
        "events",
        [("all", everything), ("after the first 20 %", position >= cut)],
        pop_hit,
        model_hit,
    )
    by_history = [
        ("no history", history == 0),
        ("1-2 earlier items", (history >= 1) & (history <= 2)),
        ("3+ earlier items", history >= 3),
    ]
    _print_split("history", by_history, pop_hit, model_hit)
    by_rank = [
        ("popularity's rank 0-9", pop_rank < 10),
        ("10-29", (pop_rank >= 10) & (pop_rank < 30)),
        ("30+", pop_rank >= 30),
    ]
    _print_split("true item", by_rank, pop_hit, model_hit)
    windows = [
        (f"events {w:,}+", (position >= w) & (position < w + args.window))
        for w in range(0, len(history), args.window)
    ]
    _print_split("window", windows, pop_hit, model_hit)


if __name__ == "__main__":
    main()
