"""The change-driven controller on kmock's emulator: what reaches the CR's status, and when.

Pure control-loop checks (which watch event causes what, what is written, how often). What
the API server itself decides (server-side apply ownership, garbage collection, real
controllers' conditions) is checked again on envtest in tests/envtest_operator/.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import kmock
import pytest
from kube_harness import (
    CHILD_RESOURCES,
    CR_RESOURCE,
    FakeApi,
    eventually,
    example_cr,
    running_operator,
)

from freshrank_operator import render

pytestmark = pytest.mark.integration
NS = "default"


def _condition(api: FakeApi, name: str, type_: str) -> dict[str, Any]:
    cr = api.get(CR_RESOURCE, NS, name)
    assert cr is not None
    for condition in (cr.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return dict(condition)
    raise AssertionError(f"no {type_} condition yet: {cr.get('status')}")


def _expected(api: FakeApi, name: str) -> set[tuple[str, str]]:
    cr = api.get(CR_RESOURCE, NS, name)
    assert cr is not None
    return {(m["kind"], m["metadata"]["name"]) for m in render.render(cr)}


def _events(emulator: kmock.KubernetesEmulator, reason: str) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (res, _, _), obj in list(emulator.objects.items())
        if res == kmock.resource("v1/events")
        and not obj.deleted
        and obj.raw.get("reason") == reason
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_no_finalizer_so_a_cr_goes_while_the_operator_is_down(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        await eventually(lambda: _condition(api, "shop", "Ready"))
    cr = api.get(CR_RESOURCE, NS, "shop")
    assert cr is not None
    assert not cr["metadata"].get("finalizers")
    # Every child points at the CR: the API server's garbage collector removes them.
    for obj in api.children(NS, "shop").values():
        assert obj["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    await api.delete_cr(NS, "shop")  # the operator is stopped
    assert api.get(CR_RESOURCE, NS, "shop") is None


async def test_an_object_the_cr_does_not_own_is_reported_and_left_untouched(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    mine = {
        "metadata": {"name": "adopt-config", "namespace": NS, "labels": {"team": "search"}},
        "data": {"owner": "the platform team"},
    }
    await api.create("v1/configmaps", NS, mine)
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("adopt"))
        degraded = await eventually(
            lambda: (
                _condition(api, "adopt", "Degraded")["status"] == "True"
                and _condition(api, "adopt", "Degraded")
            )
        )
        assert degraded["reason"] == "ChildNotOwned"
        assert "ConfigMap/adopt-config" in degraded["message"]
        # Everything else is rendered; the user's ConfigMap is exactly as it was.
        await eventually(lambda: ("Deployment", "adopt-ranking") in api.children(NS, "adopt"))
        live = api.get("v1/configmaps", NS, "adopt-config")
        assert live is not None
        assert live["data"] == {"owner": "the platform team"}
        assert not live["metadata"].get("ownerReferences")
        assert live["metadata"]["labels"] == {"team": "search"}
        assert api.versions("v1/configmaps", NS, "adopt-config") == 1


async def test_reverting_a_failed_edit_clears_degraded_and_follows_the_generation(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    """A failed edit reverted to the last good spec: Kopf's diff says "nothing changed", and
    Degraded used to stay until a restart. The generation is new: it is reconciled."""
    async with running_operator(str(emulator.url), retry_seconds=300):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: _condition(api, "shop", "Degraded")["status"] == "False")
        await api.patch_spec(NS, "shop", {"featureStore": {"dsnSecret": {"name": "nope"}}})
        degraded = await eventually(
            lambda: (
                _condition(api, "shop", "Degraded")["status"] == "True"
                and _condition(api, "shop", "Degraded")
            )
        )
        assert degraded["reason"] == "FeatureStoreSecretNotFound"
        assert api.get(CR_RESOURCE, NS, "shop")["status"]["observedGeneration"] == 2
        await api.patch_spec(NS, "shop", {"featureStore": {"dsnSecret": None}})
        cleared = await eventually(
            lambda: (
                _condition(api, "shop", "Degraded")["status"] == "False"
                and _condition(api, "shop", "Degraded")
            ),
            timeout=10,  # far below the 300 s retry
        )
        assert cleared["observedGeneration"] == 3
        assert api.get(CR_RESOURCE, NS, "shop")["status"]["observedGeneration"] == 3


async def test_child_failures_degrade_the_cr_naming_the_child(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        await eventually(lambda: _condition(api, "shop", "Degraded")["status"] == "False")
        # What the Deployment controller copies from its ReplicaSet when pods are refused.
        forbidden = 'pods "shop-ranking-x" is forbidden: violates PodSecurity "restricted:latest"'
        await api.patch_status(
            CHILD_RESOURCES["Deployment"],
            NS,
            "shop-ranking",
            {
                "replicas": 0,
                "conditions": [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": forbidden,
                    }
                ],
            },
        )
        degraded = await eventually(
            lambda: (
                _condition(api, "shop", "Degraded")["status"] == "True"
                and _condition(api, "shop", "Degraded")
            )
        )
        assert degraded["reason"] == "RankingFailedCreate"
        assert "Deployment/shop-ranking" in degraded["message"]
        assert "PodSecurity" in degraded["message"]
        # A StatefulSet says it in an Event only (its controller records FailedCreate).
        event = {
            "metadata": {"name": "shop-trainer.1", "namespace": NS},
            "involvedObject": {"kind": "StatefulSet", "namespace": NS, "name": "shop-trainer"},
            "reason": "FailedCreate",
            "type": "Warning",
            "message": "create Pod shop-trainer-0 in StatefulSet shop-trainer failed error: "
            'pods "shop-trainer-0" is forbidden: exceeded quota: none',
        }
        await api.create("v1/events", NS, event)
        both = await eventually(
            lambda: (
                "StatefulSet/shop-trainer" in _condition(api, "shop", "Degraded")["message"]
                and _condition(api, "shop", "Degraded")
            )
        )
        assert "exceeded quota" in both["message"]
        assert _events(emulator, "RankingFailedCreate")  # the transition posted an Event
        # The pods get created: the failure clears.
        await api.patch_status(
            CHILD_RESOURCES["Deployment"], NS, "shop-ranking", {"replicas": 2, "conditions": []}
        )
        await api.patch_status(CHILD_RESOURCES["StatefulSet"], NS, "shop-trainer", {"replicas": 1})
        await eventually(lambda: _condition(api, "shop", "Degraded")["status"] == "False")
        assert _events(emulator, "Recovered")


async def test_a_secret_created_later_takes_effect_in_seconds_with_events(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "creds"}}}
    async with running_operator(str(emulator.url), retry_seconds=300):
        await api.create_cr(example_cr("shop", **spec))
        degraded = await eventually(lambda: _condition(api, "shop", "Degraded"))
        assert degraded["reason"] == "KafkaSecretNotFound"
        warning = await eventually(lambda: _events(emulator, "KafkaSecretNotFound"))
        assert warning[0]["type"] == "Warning"
        assert "spec.kafka.credentialsSecret.name" in warning[0]["message"]
        secret = {
            "metadata": {"name": "creds", "namespace": NS},
            "data": {"username": _b64("u"), "password": _b64("p")},
        }
        start = time.monotonic()
        await api.create("v1/secrets", NS, secret)
        await eventually(
            lambda: _condition(api, "shop", "Degraded")["status"] == "False", timeout=10
        )
        assert time.monotonic() - start < 10  # the retry is 300 s away: the watch did it
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        recovered = await eventually(lambda: _events(emulator, "Recovered"))
        assert recovered[0]["type"] == "Normal"
        assert "KafkaSecretNotFound" in recovered[0]["message"]


async def test_a_deleted_child_is_rendered_again(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url), retry_seconds=300):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        async with emulator.delete(f"/api/v1/namespaces/{NS}/services/shop-ranking") as response:
            assert response.status < 300
        await eventually(lambda: ("Service", "shop-ranking") in api.children(NS, "shop"))


async def test_idle_crs_cost_no_api_requests(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    """Before: 3 LISTs per CR per tick (here 10 CRs x 5 ticks/s). Now: nothing while idle."""
    count = 10
    async with running_operator(str(emulator.url), tick_seconds=0.2):
        for i in range(count):
            await api.create_cr(example_cr(f"idle-{i}"))
        for i in range(count):
            await eventually(
                lambda i=i: (
                    api.get(CR_RESOURCE, NS, f"idle-{i}")
                    .get("status", {})
                    .get("observedGeneration")
                    == 1
                )
            )
        await asyncio.sleep(1.0)  # let the last status writes land
        before = emulator.requests_answered
        await asyncio.sleep(2.0)  # an idle window of 10 ticks
        idle = emulator.requests_answered - before
    assert idle <= 2, f"{idle} API requests in 2 s with {count} idle CRs"
