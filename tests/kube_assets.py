"""Where the envtest binaries are: asked of tests/envtest/build.sh (no build here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from freshrank.embedded.kubernetes import KubeAssets

REPO = Path(__file__).resolve().parents[1]


def envtest_assets() -> KubeAssets:
    """The binaries `make envtest` built (tests/envtest/build.sh), or $FRESHRANK_ENVTEST_ASSETS."""
    located = subprocess.run(
        [str(REPO / "tests" / "envtest" / "build.sh"), "--locate"],
        capture_output=True,
        text=True,
        check=False,
    )
    if located.returncode != 0:
        pytest.fail(located.stderr.strip(), pytrace=False)
    return KubeAssets.in_directory(Path(located.stdout.strip()))
