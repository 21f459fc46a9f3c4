"""The eval table (rich) and its JSON (``benchmarks/results/eval-<dataset>.json``)."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from freshrank.evaluation.datasets import Dataset
from freshrank.evaluation.runner import EvalSettings, RunResult, Segment

__all__ = ["print_table", "write_json"]


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def print_table(
    dataset: Dataset, settings: EvalSettings, results: list[RunResult], console: Console
) -> None:
    table = Table(
        title=(
            f"Prequential eval on {dataset.name}: {len(dataset.events):,} events, "
            f"{dataset.users:,} users, {dataset.items:,} items, batch {settings.batch_size}"
        )
    )
    table.add_column("model", no_wrap=True)
    table.add_column("HR@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    table.add_column("HR@10 full", justify="right")
    table.add_column("NDCG@10 full", justify="right")
    table.add_column(f"HR@10 after {settings.static_fraction:.0%}", justify="right")
    has_drift = any(r.after_drift is not None for r in results)
    if has_drift:
        table.add_column("HR@10 after drift", justify="right")
    table.add_column("events/s", justify="right")
    for result in results:
        row = [
            result.model,
            _fmt(result.overall.hr10),
            _fmt(result.overall.ndcg10),
            _fmt(result.overall.hr10_full),
            _fmt(result.overall.ndcg10_full),
            _fmt(result.after_static_cut.hr10),
        ]
        if has_drift:
            row.append(_fmt(result.after_drift.hr10) if result.after_drift else "-")
        row.append(f"{result.events_per_second:,.0f}")
        table.add_row(*row)
    console.print(table)
    console.print(
        f"HR/NDCG: true item vs {settings.negatives} sampled negatives; 'full': vs every known "
        f"item for {settings.full_eval_events} events per batch. Scored before training on it."
    )


def write_json(
    path: Path, dataset: Dataset, settings: EvalSettings, results: list[RunResult], device: str
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
            "start, then learned from; ties count against the true item; unknown users/items "
            "score on row 0; full ranking excludes nothing"
        ),
        "results": {r.model: _result_json(r) for r in results},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_nan_to_none))


def _segment(segment: Segment | None) -> dict[str, Any] | None:
    if segment is None:
        return None
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in dataclasses.asdict(segment).items()
    }


def _result_json(result: RunResult) -> dict[str, Any]:
    return {
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


def _nan_to_none(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
