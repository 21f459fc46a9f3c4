"""Running ``freshrank bench NAME`` end to end, as a user would (tests/bench)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_bench(tmp_path: Path, *args: str, timeout: float = 240) -> str:
    """``freshrank bench ARGS`` in its own process, its JSON written under ``tmp_path``: the
    table it printed (stdout); the exit status must be 0."""
    env = {**os.environ, "FRESHRANK_BENCH_DIR": str(tmp_path), "COLUMNS": "160"}
    argv = [sys.executable, "-m", "freshrank.cli", "bench", *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
