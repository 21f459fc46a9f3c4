"""Fixtures shared by every test package: real embedded components on free loopback ports."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freshrank.core.telemetry import setup_tracing
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton
from freshrank.embedded.kubernetes import EmbeddedKubernetes, KubeAssets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The process-wide in-memory span exporter (OpenTelemetry allows one global provider)."""
    exporter = InMemorySpanExporter()
    setup_tracing("freshrank-tests", exporter=exporter)
    return exporter


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the session; tests isolate themselves with unique topics."""
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as running:
        yield running


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


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKubernetes]:
    """One real control plane for the session (envtest): etcd, kube-apiserver and
    kube-controller-manager on loopback ports; no kubelet or scheduler, so Pods stay Pending.
    Tests isolate themselves in namespaces of their own."""
    workdir = tmp_path_factory.mktemp("kubernetes")
    with EmbeddedKubernetes(workdir, envtest_assets()) as cluster:
        yield cluster


@pytest.fixture
def unique_name() -> str:
    """A deployment name unique to this test (topics, groups and model names derive from it)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def model_repository(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def triton(tmp_path: Path, model_repository: Path) -> Iterator[EmbeddedTriton]:
    """A real tritonserver (explicit model control) over this test's model repository."""
    with EmbeddedTriton(tmp_path, model_repository) as running:
        yield running


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The machine's 2 cores are shared: keep a compute-bound test on one."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
