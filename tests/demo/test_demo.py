"""A shortened `freshrank demo` through the same code path as `make demo`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from freshrank.cli import main

pytestmark = pytest.mark.integration


def _orphans(workdir: Path) -> list[str]:
    """Processes still running from this demo's stack (matched by its work dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(workdir) in line]


def test_short_demo_serves_two_versions_beats_popularity_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    report_dir = tmp_path / "report"
    # What an earlier demo left behind: its checkpoint and models must not be resumed (the
    # embedded broker starts empty; old offsets would point past the new topic's end).
    stale = [report_dir / "stack" / "checkpoints" / "stale", report_dir / "stack" / "models" / "x"]
    for path in stale:
        path.mkdir(parents=True)
    code = main(
        [
            "demo",
            "--no-live",
            "--events", "12000",
            "--rate", "800",
            "--request-rate", "10",
            "--export-interval", "4",
            "--max-seconds", "200",
            "--report-dir", str(report_dir),
        ]
    )  # fmt: skip
    report = json.loads((report_dir / "report.json").read_text())
    summary = report["summary"]
    assert code == 0, summary
    assert report["passed"]
    assert summary["versions served"] >= 2
    assert summary["prequential HR@10 (trainer, rolling)"] > summary["popularity baseline HR@10"]
    assert summary["errors"] == 0
    assert summary["events trained"] == summary["events sent"] == 12000
    assert (report_dir / "report.png").stat().st_size > 10_000
    assert _orphans(report_dir) == []
    assert not any(path.exists() for path in stale)
