"""Operator fixtures: the real API server (envtest) with the CRD installed, a client and a
namespace per test; and kmock's KubernetesEmulator, for the checks of the emulator itself (the
operator benchmark runs on it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from envtest import ClusterApi, credentials, delete_namespace, install_crd, new_namespace

from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator.kube import KubeClient
from freshrank_operator.testing import make_emulator


@pytest.fixture(scope="session")
def recdep_crd(kube_cluster: EmbeddedKubernetes) -> dict[str, Any]:
    """The CRD applied to the session's cluster (kubectl apply --server-side), Established."""
    return install_crd(kube_cluster)


@pytest.fixture
async def kube(kube_cluster: EmbeddedKubernetes) -> AsyncIterator[KubeClient]:
    """A client logged in as the cluster's admin."""
    cluster_credentials = credentials(kube_cluster)

    async def login() -> Any:
        return cluster_credentials

    async with KubeClient(login) as client:
        yield client


@pytest.fixture
async def namespace(kube: KubeClient, recdep_crd: dict[str, Any]) -> AsyncIterator[str]:
    """A fresh namespace for this test (the CRD installed); deleted afterwards."""
    name = await new_namespace(kube)
    yield name
    await delete_namespace(kube, name)


@pytest.fixture
def cluster_api(kube: KubeClient, namespace: str) -> ClusterApi:
    return ClusterApi(kube, namespace)


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with make_emulator() as handler, kmock.Server(handler):
        yield handler
