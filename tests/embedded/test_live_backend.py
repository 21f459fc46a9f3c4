"""The live backend's build (cached per machine) and its copies of the repository contract."""

from __future__ import annotations

import re
import subprocess
from importlib import resources

from freshrank.core import model_repo
from freshrank.embedded.live_backend import LIBRARY_NAME, build_live_backend


def test_the_build_is_cached_and_exports_the_backend_entry_points() -> None:
    directory = build_live_backend()
    assert build_live_backend() == directory  # a second call builds nothing
    # Past the per-process memo, the machine's cache answers: the same library, not rebuilt.
    assert build_live_backend.__wrapped__() == directory
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(directory / LIBRARY_NAME)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for entry in (
        "TRITONBACKEND_Initialize",
        "TRITONBACKEND_ModelInitialize",
        "TRITONBACKEND_ModelFinalize",
        "TRITONBACKEND_ModelInstanceExecute",
    ):
        assert re.search(rf" T {entry}$", symbols, re.MULTILINE), entry


def test_the_backend_names_the_tensors_as_the_repository_does() -> None:
    # C++ cannot import core.model_repo: its own copies of the names must stay the same.
    source = resources.files("freshrank.embedded").joinpath("live_backend.cc").read_text()
    inputs = re.search(r"kInputs\[\] = \{([^}]*)\}", source)
    assert inputs is not None
    assert tuple(re.findall(r'"([^"]+)"', inputs.group(1))) == model_repo.INPUTS
    assert f'kVersionInput = "{model_repo.VERSION_INPUT}"' in source
    assert f'kOutput = "{model_repo.OUTPUT}"' in source
