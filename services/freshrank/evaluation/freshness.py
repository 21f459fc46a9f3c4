"""The freshness -> quality curve: prequential HR@10 against the export interval.

The learner trains on every micro-batch in all runs; only the copy that *scores* (the
served export) is refreshed every N events: every batch (the model lags one micro-batch),
every 1k or 10k events, or never after the first export at the static cut. The gap between
the ends of the curve is what freshness is worth on that stream.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freshrank.evaluation.datasets import Dataset
from freshrank.evaluation.pool import RunSpec, run_here
from freshrank.evaluation.report import mean_ci
from freshrank.evaluation.runner import NEVER, EvalSettings, RunResult

__all__ = ["CurvePoint", "FreshnessCurve", "parse_intervals", "run_curve", "write_curve"]


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    label: str
    interval: int | None  # events between exports; None: every batch; NEVER: once
    hr10: float
    hr10_ci95: float
    ndcg10: float
    hr10_after_cut: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class FreshnessCurve:
    dataset: str
    events: int
    model: str
    batch_size: int
    seeds: int
    points: list[CurvePoint]


def parse_intervals(text: str) -> list[int | None]:
    """``batch,1000,10000,never`` -> [None, 1000, 10000, NEVER]."""
    intervals: list[int | None] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part in ("batch", "event", "0"):
            intervals.append(None)
        elif part == "never":
            intervals.append(NEVER)
        else:
            try:
                value = int(part.replace("k", "000"))
            except ValueError:
                raise SystemExit(f"bad curve interval {part!r} (batch, N, never)") from None
            if value < 1:
                raise SystemExit(f"curve interval must be >= 1, not {value}")
            intervals.append(value)
    return intervals


def _label(interval: int | None, batch_size: int) -> str:
    if interval is None:
        return f"every batch ({batch_size})"
    if interval == NEVER:
        return "never (after 20%)"
    return f"{interval:,} events"


def run_curve(
    model: str,
    dataset: Dataset,
    settings: EvalSettings,
    intervals: list[int | None],
    *,
    seeds: int = 1,
    log: Callable[[str], Any] | None = None,
    run_all: Callable[[list[RunSpec]], list[RunResult]] | None = None,
) -> FreshnessCurve:
    """HR@10 at each export interval (``seeds`` runs each). ``run_all`` runs the specs
    (default: one after the other here; ``pool.run_in_parallel`` side by side)."""
    specs = [
        RunSpec(model, dataclasses.replace(settings, seed=settings.seed + s), interval)
        for interval in intervals
        for s in range(seeds)
    ]
    results = run_all(specs) if run_all is not None else run_here(specs, dataset)
    points = []
    for index, interval in enumerate(intervals):
        runs = results[index * seeds : (index + 1) * seeds]
        hr, half = mean_ci([r.overall.hr10 for r in runs])
        point = CurvePoint(
            label=_label(interval, settings.batch_size),
            interval=interval,
            hr10=hr,
            hr10_ci95=half,
            ndcg10=mean_ci([r.overall.ndcg10 for r in runs])[0],
            hr10_after_cut=mean_ci([r.after_static_cut.hr10 for r in runs])[0],
            seconds=sum(r.seconds for r in runs),
        )
        points.append(point)
        if log is not None:
            log(f"{dataset.name} {model} export {point.label}: HR@10 {point.hr10:.4f}")
    return FreshnessCurve(
        dataset=dataset.name,
        events=len(dataset.events),
        model=model,
        batch_size=settings.batch_size,
        seeds=seeds,
        points=points,
    )


def write_curve(curve: FreshnessCurve, json_path: Path) -> tuple[Path, Path]:
    """``freshness-<dataset>.json`` and the PNG beside it."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": f"freshness-{curve.dataset}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **dataclasses.asdict(curve),
    }
    json_path.write_text(json.dumps(payload, indent=1, default=_none_for_nan))
    png_path = json_path.with_suffix(".png")
    _plot(curve, png_path)
    return json_path, png_path


def _none_for_nan(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _plot(curve: FreshnessCurve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p.label for p in curve.points]
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    axes.plot(labels, [p.hr10 for p in curve.points], marker="o", label="HR@10 (all)")
    axes.plot(labels, [p.hr10_after_cut for p in curve.points], marker="s", label="HR@10 after 20%")
    for index, point in enumerate(curve.points):
        axes.annotate(
            f"{point.hr10:.3f}",
            (index, point.hr10),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    axes.set_xlabel("export interval (staler to the right)")
    axes.set_ylabel("prequential HR@10")
    axes.set_title(
        f"Freshness vs quality: {curve.model} on {curve.dataset} ({curve.events:,} events)"
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
