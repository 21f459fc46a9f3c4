"""The emulator the operator tests and benchmark run against (freshrank_operator.testing):
API-server semantics it adds, and per-request costs that do not grow with the run."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from freshrank_operator.kube import Credentials, KubeClient, NotFound

NS = "default"


def _config_map(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "data": {"k": name},
    }


def _client(emulator: kmock.KubernetesEmulator) -> KubeClient:
    async def login() -> Credentials:
        return Credentials(server=str(emulator.url))

    return KubeClient(login)


async def test_apply_creates_in_one_request_and_then_merges(
    emulator: kmock.KubernetesEmulator,
) -> None:
    async with _client(emulator) as client:
        before = emulator.requests_answered
        created = await client.apply(_config_map("a"))
        assert created["data"] == {"k": "a"}
        assert emulator.requests_answered - before == 1  # no 404 then POST
        await client.apply({**_config_map("a"), "data": {"k": "b"}})
        assert (await client.get("v1", "ConfigMap", NS, "a"))["data"] == {"k": "b"}


async def test_lists_honour_label_selectors_and_fetches_find_by_key(
    emulator: kmock.KubernetesEmulator,
) -> None:
    async with _client(emulator) as client:
        for i in range(20):
            await client.apply(_config_map(f"cm-{i}", app="x" if i % 2 else "y"))
        listed = await client.list("v1", "ConfigMap", NS, labels={"app": "x"})
        assert sorted(i["metadata"]["name"] for i in listed) == sorted(
            f"cm-{i}" for i in range(1, 20, 2)
        )
        assert (await client.get("v1", "ConfigMap", NS, "cm-7"))["data"] == {"k": "cm-7"}
        with pytest.raises(NotFound):
            await client.get("v1", "ConfigMap", NS, "absent")
    async with emulator.get(f"/api/v1/namespaces/{NS}/configmaps/absent") as response:
        assert response.status == 404
        assert (await response.json())["details"] == {}  # no server traceback formatted


async def test_the_request_log_holds_only_requests_being_routed(
    emulator: kmock.KubernetesEmulator,
) -> None:
    async with _client(emulator) as client:
        for i in range(50):
            await client.apply(_config_map(f"cm-{i}"))
    assert list(emulator) == []  # kmock's routing log: empty between requests
    assert len(emulator.answered) == 50  # what tests assert on
    assert emulator.answered[-1].name == "cm-49"
