"""The demo's final report: a table on the terminal, JSON, and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_report", "write_chart", "write_json"]


def write_json(report: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def write_chart(
    hr_series: list[tuple[float, float]],
    baseline_hr: float,
    latency_series: list[tuple[float, float, bool]],
    exports: list[tuple[float, int]],
    directory: Path,
) -> Path:
    """HR@10 over time (with the popularity baseline) above ranking latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if hr_series:
        top.plot(
            [t for t, _ in hr_series], [v for _, v in hr_series], label="trainer rolling HR@10"
        )
    top.axhline(baseline_hr, color="grey", linestyle="--", label="popularity baseline HR@10")
    for seconds, version in exports:
        top.axvline(seconds, color="green", alpha=0.3)
        top.text(seconds, 0.02, f"v{version}", rotation=90, color="green", fontsize=8)
    top.set_ylabel("HR@10 (prequential)")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    normal = [(t, ms) for t, ms, fallback in latency_series if not fallback]
    fallback = [(t, ms) for t, ms, fb in latency_series if fb]
    bottom.scatter([t for t, _ in normal], [ms for _, ms in normal], s=4, label="model (Triton)")
    if fallback:
        bottom.scatter([t for t, _ in fallback], [ms for _, ms in fallback], s=4, c="orange",
                       label="fallback")  # fmt: skip
    bottom.set_yscale("log")
    bottom.set_ylabel("ranking latency (ms)")
    bottom.set_xlabel("seconds since the stream started")
    bottom.legend(loc="upper left")
    figure.tight_layout()
    path = directory / "report.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title="freshrank demo: final report")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in report["summary"].items():
        table.add_row(key, _fmt(value))
    (console or Console()).print(table)


def _fmt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)
