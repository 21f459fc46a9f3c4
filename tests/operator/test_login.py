"""The operator logs in with the kubeconfig chosen at login time (issue 11: the Kubernetes
client read $KUBECONFIG at import, so a KUBECONFIG set later gave LoginError)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
import yaml

from freshrank.embedded.kubernetes import kubeconfig_document
from freshrank_operator.login import kubeconfig_login


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(yaml.safe_dump(kubeconfig_document(server, token, b"not checked here")))
    return path


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_kubeconfig_set_after_import_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kubernetes  # noqa: F401  (imported first, as the operator process does)

    path = _kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", "late-token")
    monkeypatch.setenv("KUBECONFIG", str(path))
    info = kubeconfig_login()
    assert info.server == "https://127.0.0.1:6443"
    assert info.token == "late-token"
    assert info.ca_path is not None
    assert Path(info.ca_path).read_bytes() == b"not checked here"


def test_an_explicit_kubeconfig_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "env", "https://env:1", "a")))
    explicit = _kubeconfig(tmp_path / "explicit", "https://explicit:2", "b")
    info = kubeconfig_login(str(explicit))
    assert (info.server, info.token) == ("https://explicit:2", "b")


def test_no_credentials_is_a_login_error_naming_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(kopf.LoginError, match="missing"):
        kubeconfig_login()
