"""`freshrank bench operator` end to end on a few CRs: both sides run, the table has the peer
and the ratio, and the JSON carries the cost breakdown and the load average."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_support import run_bench

pytestmark = pytest.mark.integration


def test_operator_bench_runs_both_sides_and_reports_costs(tmp_path: Path) -> None:
    stdout = run_bench(tmp_path, "operator", "--crs", "8", "--samples", "2", "--timeout", "120")
    assert "direct apply" in stdout
    assert "load average" in stdout
    results = json.loads((tmp_path / "operator.json").read_text())
    assert results["params"] == {"crs": 8, "samples": 2, "timeout": 120.0}
    for side in ("ours", "peer"):
        assert results[f"{side}_throughput"] > 0
        assert results[f"{side}_latency_ms"] > 0
        # Every CR needs at least its children written (10 for the default spec).
        assert results[f"{side}_requests_per_cr"] >= 10
        assert results[f"{side}_cpu_ms_per_cr"] > 0
    assert len(results["load_average_before"]) == 3
    ratios = {row["metric"]: row["ratio"] for row in results["rows"]}
    assert all(ratio is not None and ratio > 0 for ratio in ratios.values())


def test_operator_bench_on_envtest_measures_both_sides_and_idle_cost(tmp_path: Path) -> None:
    """`--envtest`: on a real API server (what `make envtest` built), requests counted from
    its audit log."""
    stdout = run_bench(
        tmp_path, "operator", "--envtest", "--crs", "3", "--idle-seconds", "5", "--timeout", "120",
        timeout=280,
    )  # fmt: skip
    assert "envtest kube-apiserver" in stdout
    results = json.loads((tmp_path / "operator-envtest.json").read_text())
    for side in ("ours", "peer"):
        assert 0 < results[side]["children_p50_ms"] <= results[side]["children_max_ms"]
        # Every CR needs at least its children written (11 for the default spec).
        assert results[side]["requests_per_cr"] >= 11
    # Change-driven: idle CRs cost the operator no read (it used to LIST 3 kinds every 5 s per
    # CR); what remains is status written while the controllers still create pods.
    assert "list" not in results["idle"]["by_verb"], results["idle"]
    assert "get" not in results["idle"]["by_verb"], results["idle"]
    assert results["idle"]["cpu_ms_per_min_per_cr"] > 0
