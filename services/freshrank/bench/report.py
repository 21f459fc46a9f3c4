"""One way to report a benchmark: a table with ours, the peer and the ratio, plus JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BenchRow",
    "BenchTable",
    "ModelServed",
    "model_served",
    "percentile",
    "results_dir",
    "summarize",
]


def results_dir() -> Path:
    return Path(os.environ.get("FRESHRANK_BENCH_DIR", "benchmarks/results"))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values) if values else float("nan"),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "n": float(len(values)),
    }


@dataclasses.dataclass(frozen=True)
class ModelServed:
    """Answers in order, split at the first one a model served: the fallbacks before it
    (no model yet) are reported apart; after it, every fallback counts against the model."""

    before_first_model: int
    after_first_model: int
    fallbacks_after: int

    @property
    def share(self) -> float:
        """Of the answers after the first model-served one, the share a model served."""
        if not self.after_first_model:
            return float("nan")
        return 1.0 - self.fallbacks_after / self.after_first_model


def model_served(served: Sequence[bool]) -> ModelServed:
    """``served``: per answer, in the order they were sent, whether a model served it."""
    first = next((i for i, by_model in enumerate(served) if by_model), len(served))
    after = served[first:]
    return ModelServed(first, len(after), sum(1 for by_model in after if not by_model))


@dataclasses.dataclass(frozen=True)
class BenchRow:
    metric: str
    ours: float
    peer: float | None
    unit: str
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        """ours / peer for throughput, peer / ours for latency: > 1 always means we win."""
        if self.peer is None or self.peer == 0 or self.ours == 0:
            return None
        return self.ours / self.peer if self.higher_is_better else self.peer / self.ours


class BenchTable:
    def __init__(self, title: str, *, ours: str = "freshrank", peer: str = "peer") -> None:
        self.title = title
        self.ours_label = ours
        self.peer_label = peer
        self.rows: list[BenchRow] = []

    def add(
        self,
        metric: str,
        ours: float,
        peer: float | None,
        unit: str,
        *,
        higher_is_better: bool = True,
    ) -> BenchRow:
        row = BenchRow(metric, ours, peer, unit, higher_is_better)
        self.rows.append(row)
        return row

    def print(self, console: Console | None = None) -> None:
        # Imported here: benchmarks register their CLI options without the local extra.
        from rich.console import Console
        from rich.table import Table

        table = Table(title=self.title)
        for column in (
            "metric",
            self.ours_label,
            self.peer_label,
            "unit",
            "ratio (>1 = ours better)",
        ):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for row in self.rows:
            table.add_row(
                row.metric,
                _fmt(row.ours),
                "-" if row.peer is None else _fmt(row.peer),
                row.unit,
                "-" if row.ratio is None else f"{row.ratio:.2f}",
            )
        (console or Console()).print(table)

    def write_json(self, name: str, extra: dict[str, Any] | None = None) -> Path:
        path = results_dir() / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": name,
            "title": self.title,
            "ours": self.ours_label,
            "peer": self.peer_label,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in self.rows],
            **(extra or {}),
        }
        path.write_text(json.dumps(payload, indent=2))
        return path


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
