"""The Helm chart: installs our CRD (the same file), and RBAC covers exactly what the code does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from freshrank.core.settings import env_name
from freshrank_operator import crd, reconcile
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import WATCHED_CHILDREN
from freshrank_operator.kube import plural

CHART = Path(__file__).resolve().parents[2] / "charts" / "freshrank"


def _rules(name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((CHART / "files" / name).read_text())
    return rules


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def test_chart_metadata_and_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "freshrank"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert {"image", "resources", "watchNamespaces", "serviceAccount"} <= set(values)


def test_chart_installs_the_one_crd() -> None:
    shipped = CHART / "crds" / crd.CRD_FILE
    assert yaml.safe_load(shipped.read_text()) == crd.load_crd()


def test_rbac_covers_what_the_operator_does() -> None:
    granted = _granted(_rules("rbac-rules.yaml"))
    needed = {(crd.GROUP, crd.PLURAL, verb) for verb in ("get", "list", "watch", "patch")}
    needed |= {(crd.GROUP, f"{crd.PLURAL}/status", "patch")}
    for api_version, kind in reconcile.CHILD_KINDS:
        for verb in ("get", "list", "create", "patch", "delete"):
            needed.add((_group(api_version), plural(api_version, kind), verb))
    for api_version, _kind, resource in WATCHED_CHILDREN:
        needed.add((_group(api_version), resource, "watch"))
    needed |= {(crd.GROUP, crd.PLURAL, "watch"), ("", "persistentvolumeclaims", "watch")}
    needed |= {("", "secrets", verb) for verb in ("get", "list", "watch", "create")}
    needed |= {("", "pods", "list"), ("", "pods", "watch")}
    needed |= {("", "events", verb) for verb in ("create", "list", "watch")}
    assert needed <= granted, sorted(needed - granted)


def test_rbac_is_least_privilege() -> None:
    for name in ("rbac-rules.yaml", "cluster-rules.yaml", "leader-rules.yaml"):
        for rule in _rules(name):
            assert "*" not in rule["verbs"], rule
            assert "*" not in rule["resources"], rule
    secrets = [r for r in _rules("rbac-rules.yaml") if "secrets" in r["resources"]]
    # Read and watched (a Secret created later takes effect at once); the Triton admin-key
    # Secret is created once; never updated or deleted.
    assert [r["verbs"] for r in secrets] == [["get", "list", "watch", "create"]]
    cluster = _granted(_rules("cluster-rules.yaml"))
    assert all(verb in {"get", "list", "watch"} for _, _, verb in cluster)


def test_templates_wire_the_operator() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "args: [operator]" in deployment
    assert "/healthz" in deployment
    assert "/readyz" in deployment
    assert "FRESHRANK_NAMESPACES" in deployment
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    assert "files/rbac-rules.yaml" in rbac
    assert "kind: Role\n" in rbac
    assert (CHART / "templates" / "serviceaccount.yaml").exists()


def test_every_env_var_of_the_operator_pod_is_an_operator_setting() -> None:
    """The chart types the operator's env names by hand (a template): each must name a field of
    OperatorConfig, or the operator would silently run on a default."""
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    names = set(re.findall(r"name: (FRESHRANK_[A-Z0-9_]+)", deployment))
    known = {env_name(OperatorConfig, field) for field in OperatorConfig.model_fields}
    assert len(names) > 5
    assert names <= known, f"no OperatorConfig setting reads {sorted(names - known)}"


def test_several_replicas_elect_a_leader_instead_of_kopf_peering() -> None:
    """Kopf peering paused every replica of equal priority (all of them) and shipped no CRDs:
    the chart runs leader election on a Lease, with RBAC for that Lease only."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "peering" not in values
    assert values["leaderElection"]["enabled"] is True
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    for env in ("FRESHRANK_LEADER_ELECTION", "FRESHRANK_POD_NAME", "FRESHRANK_POD_NAMESPACE"):
        assert env in deployment
    assert "FRESHRANK_STANDALONE" not in deployment
    assert _granted(_rules("leader-rules.yaml")) == {
        ("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")
    }
