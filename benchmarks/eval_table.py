"""Print the README's eval table (markdown) from `freshrank eval` JSON results.

Usage: python benchmarks/eval_table.py benchmarks/results/eval-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def rows(report: dict[str, Any]) -> list[str]:
    dataset = report["dataset"]
    stream = f"{dataset['name']} ({dataset['events']:,} events)"
    lines = []
    for model, result in report["results"].items():
        overall, after = result["overall"], result["after_static_cut"]
        drift = result.get("after_drift") or {}
        cells = [
            stream,
            model,
            _cell(overall["hr10"]),
            _cell(overall["ndcg10"]),
            _cell(overall["hr10_full"]),
            _cell(after["hr10"]),
            _cell(after["ndcg10"]),
            _cell(drift.get("hr10")),
            f"{result['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(paths: list[str]) -> None:
    print(
        "| stream | model | HR@10 | NDCG@10 | HR@10 full | HR@10 after 20 % "
        "| NDCG@10 after 20 % | HR@10 after drift | seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        for line in rows(json.loads(Path(path).read_text())):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
