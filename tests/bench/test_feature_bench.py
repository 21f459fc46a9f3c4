"""`freshrank bench feature` end to end on a small store: it runs, the service answers every
request, and the JSON carries what it takes to tell a slow server from a stalled generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_support import run_bench

pytestmark = pytest.mark.integration


def test_feature_bench_runs_and_reports_its_diagnostics(tmp_path: Path) -> None:
    stdout = run_bench(
        tmp_path, "feature",
        "--users", "300", "--items", "100", "--events", "3000", "--batch", "20",
        "--rate", "100", "--duration", "1", "--concurrency", "2", "--timeline",
    )  # fmt: skip
    assert "API (cache on) p99" in stdout
    assert "open loop: latency per 0.5 s" in stdout
    results = json.loads((tmp_path / "feature.json").read_text())
    reads = results["reads"]
    for label in ("api", "api_nocache", "sql"):
        for phase in ("open", "closed"):
            run = reads[label][phase]
            assert run["errors"] == 0, (label, phase)
            assert run["requests"] > 0
            assert {"loop_lag_max_ms", "gc_collections"} <= set(run["server"])
            assert {"sent_late_p99_ms", "loop_lag_max_ms"} <= set(run["client"])
        windows = reads[label]["open"]["timeline"]
        assert sum(w["requests"] for w in windows) == reads[label]["open"]["requests"]
        assert all("server_lag_max_ms" in w for w in windows)
    assert reads["api"]["closed"]["server_cpu_ms_per_request"] > 0
    assert results["ingest"]["events"] == 3000
