"""The eval table (rich) and its JSON (``benchmarks/results/eval-<dataset>.json``).

With several seeds every number is the mean over seeds, with the half-width of its 95 %
confidence interval (Student's t) beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from freshrank.evaluation.datasets import Dataset
from freshrank.evaluation.runner import EvalSettings, RunResult, Segment

__all__ = ["mean_ci", "print_table", "write_json"]

# Two-sided 95 % Student-t quantiles by degrees of freedom (1..10); the normal's beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)

Runs = dict[str, list[RunResult]]  # model -> one result per seed


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 95 % CI half-width); the half-width is NaN for one value."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return mean, math.nan
    df = len(finite) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return mean, t * statistics.stdev(finite) / math.sqrt(len(finite))


def _fmt(values: Sequence[float]) -> str:
    mean, half = mean_ci(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f}" if math.isnan(half) else f"{mean:.4f}±{half:.4f}"


_COLUMNS: list[tuple[str, Callable[[RunResult], float]]] = [
    ("HR@10", lambda r: r.overall.hr10),
    ("NDCG@10", lambda r: r.overall.ndcg10),
    ("HR@10 full", lambda r: r.overall.hr10_full),
    ("NDCG@10 full", lambda r: r.overall.ndcg10_full),
    ("HR@10 after cut", lambda r: r.after_static_cut.hr10),
    ("NDCG@10 after cut", lambda r: r.after_static_cut.ndcg10),
]


def print_table(dataset: Dataset, settings: EvalSettings, runs: Runs, console: Console) -> None:
    seeds = max((len(r) for r in runs.values()), default=1)
    table = Table(
        title=(
            f"Prequential eval on {dataset.name}: {len(dataset.events):,} events, "
            f"{dataset.users:,} users, {dataset.items:,} items, batch {settings.batch_size}"
            + (f", {seeds} seeds (mean±95% CI)" if seeds > 1 else "")
        )
    )
    table.add_column("model", no_wrap=True)
    for title, _ in _COLUMNS:
        table.add_column(title.replace("cut", f"{settings.static_fraction:.0%}"), justify="right")
    has_drift = any(r.after_drift is not None for results in runs.values() for r in results)
    if has_drift:
        table.add_column("HR@10 after drift", justify="right")
    table.add_column("seconds", justify="right")
    for model, results in runs.items():
        row = [model, *(_fmt([pick(r) for r in results]) for _, pick in _COLUMNS)]
        if has_drift:
            row.append(_fmt([r.after_drift.hr10 for r in results if r.after_drift is not None]))
        row.append(f"{statistics.fmean(r.seconds for r in results):.1f}")
        table.add_row(*row)
    console.print(table)
    console.print(
        f"HR/NDCG: true item vs {settings.negatives} negatives sampled without replacement from "
        f"the known items the user never met; 'full': vs every such item, for "
        f"{settings.full_eval_events} events per batch. Scored before training on it."
    )


def write_json(
    path: Path, dataset: Dataset, settings: EvalSettings, runs: Runs, device: str
) -> None:
    payload: dict[str, Any] = {
        "name": f"eval-{dataset.name}",
        "dataset": {
            "name": dataset.name,
            "events": len(dataset.events),
            "users": dataset.users,
            "items": dataset.items,
            "drift_index": dataset.drift_index,
        },
        "settings": dataclasses.asdict(settings),
        "device": device,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "protocol": (
            "prequential (test-then-train): each micro-batch is scored with the state at its "
            "start, then learned from; history = the user's events with an earlier timestamp "
            "(same-timestamp events are simultaneous); negatives drawn uniformly without "
            "replacement from the known catalogue minus the user's past items; the full "
            "ranking excludes the user's past items too; ties count against the true item; "
            "unknown users/items score on row 0"
        ),
        "results": {model: _model_json(results) for model, results in runs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def _model_json(results: list[RunResult]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for segment in ("overall", "after_static_cut"):
        for field in ("hr10", "ndcg10", "hr10_full", "ndcg10_full"):
            mean, half = mean_ci([getattr(getattr(r, segment), field) for r in results])
            summary[f"{segment}.{field}"] = {"mean": _clean(mean), "ci95": _clean(half)}
    first = _result_json(results[0])
    return {
        **first,
        "seeds": [r.seed for r in results],
        "summary": summary,
        "per_seed": [_result_json(r) for r in results[1:]],
    }


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else value


def _segment(segment: Segment | None) -> dict[str, Any] | None:
    if segment is None:
        return None
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in dataclasses.asdict(segment).items()
    }


def _result_json(result: RunResult) -> dict[str, Any]:
    return {
        "seed": result.seed,
        "overall": _segment(result.overall),
        "after_static_cut": _segment(result.after_static_cut),
        "after_drift": _segment(result.after_drift),
        "seconds": result.seconds,
        "events_per_second": result.events_per_second,
        "optimizer": result.optimizer,
        "id_stats": result.id_stats,
        "series": [
            {k: (None if math.isnan(v) else v) for k, v in point.items()} for point in result.series
        ],
    }
