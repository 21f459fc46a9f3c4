"""The real Kopf runtime against kmock's KubernetesEmulator (served over HTTP).

``running_operator`` runs ``kopf.operator`` (what KopfRunner runs) with our registry; the
emulator gets API-server semantics from ``FakeApi`` (schema validation and defaulting,
uid/generation/resourceVersion). Children are checked as the API would return them.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import kmock
import kubernetes_validate
import pytest
from aiohttp import web
from kube_harness import (
    CHILD_RESOURCES,
    CR_RESOURCE,
    FakeApi,
    eventually,
    example_cr,
    running_operator,
)

from freshrank.core.http import create_app, serve
from freshrank.embedded import free_port
from freshrank_operator import crd, render

pytestmark = pytest.mark.integration
NS = "default"


def _condition(api: FakeApi, name: str, type_: str) -> dict[str, Any]:
    cr = api.get(CR_RESOURCE, NS, name)
    assert cr is not None
    for condition in (cr.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return dict(condition)
    raise AssertionError(f"no {type_} condition yet: {cr.get('status')}")


def _status(api: FakeApi, name: str) -> dict[str, Any]:
    return dict((api.get(CR_RESOURCE, NS, name) or {}).get("status") or {})


def _container(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "ports": [{"name": "http", "containerPort": port}]}


def _expected(api: FakeApi, name: str) -> set[tuple[str, str]]:
    cr = api.get(CR_RESOURCE, NS, name)
    assert cr is not None
    return {(m["kind"], m["metadata"]["name"]) for m in render.render(cr)}


async def test_create_renders_every_child_owned_by_the_cr(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        cr = await api.create_cr(example_cr("shop"))
        expected = _expected(api, "shop")
        children = await eventually(lambda: set(api.children(NS, "shop")) == expected)
        children = api.children(NS, "shop")
        for (_kind, _), obj in children.items():
            assert obj["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
            assert obj["metadata"]["ownerReferences"][0]["controller"] is True
            kubernetes_validate.validate(obj, "1.30", strict=True)
        ready = await eventually(
            lambda: (
                _condition(api, "shop", "Ready")["reason"].endswith("NotReady")
                and _condition(api, "shop", "Ready")
            )
        )
        assert ready["status"] == "False"
        assert ready["reason"] in {
            f"{p}NotReady" for p in ("Feature", "Trainer", "Triton", "Ranking")
        }
        live = await eventually(
            lambda: (
                (api.get(CR_RESOURCE, NS, "shop") or {}).get("status", {}).get("selector")
                and api.get(CR_RESOURCE, NS, "shop")
            )
        )
        assert live["status"]["observedGeneration"] == 1
        assert live["status"]["selector"] == (
            "app.kubernetes.io/instance=shop,app.kubernetes.io/component=ranking"
        )


async def test_status_conditions_move_as_children_report_ready(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        await eventually(lambda: _condition(api, "shop", "Ready")["status"] == "False")
        # Only the ranking Deployment is not ready: the reason says so.
        await api.report_ready(NS, "shop")
        await api.patch_status(
            CHILD_RESOURCES["Deployment"], NS, "shop-ranking", {"readyReplicas": 1}
        )
        ranking = await eventually(
            lambda: (
                _condition(api, "shop", "Ready")["reason"] == "RankingNotReady"
                and _condition(api, "shop", "Ready")
            )
        )
        assert "ranking: 1/2 ready" in ranking["message"]
        await api.report_ready(NS, "shop")
        await eventually(lambda: _condition(api, "shop", "Ready")["status"] == "True")
        assert _condition(api, "shop", "Degraded")["status"] == "False"
        assert _condition(api, "shop", "Progressing")["status"] == "False"
        live = api.get(CR_RESOURCE, NS, "shop")
        assert live is not None
        assert live["status"]["replicas"] == 2
    # Status went through the status subresource, never the main resource.
    status_writes = [
        r
        for r in emulator.answered
        if r.method == "PATCH"
        and r.resource == kmock.resource(CR_RESOURCE)
        and isinstance(r.data, dict)
        and "status" in r.data
    ]
    assert status_writes
    assert all(r.subresource == "status" for r in status_writes)


async def test_a_spec_change_rewrites_only_the_affected_children(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        before = {
            key: api.versions(CHILD_RESOURCES[key[0]], NS, key[1])
            for key in api.children(NS, "shop")
        }
        await api.patch_spec(NS, "shop", {"trainer": {"batchSize": 1024}})

        def trainer_updated() -> bool:
            sts = api.get(CHILD_RESOURCES["StatefulSet"], NS, "shop-trainer")
            env = sts["spec"]["template"]["spec"]["containers"][0]["env"] if sts else []
            return {"name": "FRESHRANK_BATCH_SIZE", "value": "1024"} in env

        await eventually(trainer_updated)
        await eventually(
            lambda: api.get(CR_RESOURCE, NS, "shop")["status"]["observedGeneration"] == 2
        )
        after = {key: api.versions(CHILD_RESOURCES[key[0]], NS, key[1]) for key in before}
        changed = {key for key in before if after[key] != before[key]}
        assert changed == {("StatefulSet", "shop-trainer")}


async def test_switching_engine_prunes_what_is_no_longer_rendered(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        await api.patch_spec(NS, "shop", {"autoscaling": {"engine": "hpa"}})
        await eventually(
            lambda: ("HorizontalPodAutoscaler", "shop-ranking") in api.children(NS, "shop")
        )
        await api.patch_spec(NS, "shop", {"autoscaling": {"engine": "operator"}})
        await eventually(
            lambda: ("HorizontalPodAutoscaler", "shop-ranking") not in api.children(NS, "shop")
        )


async def test_a_missing_secret_degrades_naming_the_field_then_recovers(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "creds"}}}
    async with running_operator(str(emulator.url)) as runtime:
        await api.create_cr(example_cr("shop", **spec))
        degraded = await eventually(lambda: _condition(api, "shop", "Degraded"))
        assert degraded["status"] == "True"
        assert degraded["reason"] == "KafkaSecretNotFound"
        assert "spec.kafka.credentialsSecret.name" in degraded["message"]
        assert not api.children(NS, "shop")
        assert runtime.client is not None  # still running: no crash loop
        # The Secret appears without the password: still degraded, now naming the key.
        secret = {"metadata": {"name": "creds", "namespace": NS}, "data": {"username": _b64("u")}}
        await api.create("v1/secrets", NS, secret)
        degraded = await eventually(
            lambda: (
                _condition(api, "shop", "Degraded")["reason"] == "KafkaSecretKeyMissing"
                and _condition(api, "shop", "Degraded")
            ),
            timeout=20,
        )
        assert degraded["status"] == "True"
        assert "spec.kafka.credentialsSecret" in degraded["message"]
        assert "'password'" in degraded["message"]
        await api.patch_secret(NS, "creds", {"data": {"password": _b64("p")}})
        await eventually(
            lambda: _condition(api, "shop", "Degraded")["status"] == "False", timeout=20
        )
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_a_cr_that_bypassed_the_schema_is_degraded_not_crashed(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    """The emulator does not validate; the operator re-checks and names the field."""
    body = example_cr("shop", autoscaling={"minReplicas": 9, "maxReplicas": 3})
    body["metadata"].update({"uid": "u-1", "generation": 1, "resourceVersion": "1"})
    async with running_operator(str(emulator.url)):
        async with emulator.post(
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NS}/{crd.PLURAL}", json=body
        ) as response:
            assert response.status < 300
        degraded = await eventually(lambda: _condition(api, "shop", "Degraded"))
        assert degraded["reason"] == "InvalidSpec"
        assert "spec.autoscaling.minReplicas" in degraded["message"]
        assert not api.children(NS, "shop")


async def _latency_server(delay_s: float) -> tuple[web.AppRunner, int, asyncio.Task[None]]:
    """A real ranking-like pod under steady traffic: the shared HTTP app, whose middleware
    records the latency histogram the autoscaler reads, serving a /v1/rank that takes delay_s."""
    app = create_app("ranking")

    async def rank(_: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.json_response({"items": []})

    app.router.add_post("/v1/rank", rank)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(f"http://127.0.0.1:{port}/v1/rank", json={}) as response:
            await response.read()

    async def traffic() -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.gather(*(one(session) for _ in range(4)))

    return runner, port, asyncio.create_task(traffic())


async def test_latency_autoscaler_scales_ranking_up_and_records_an_event(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    runner, port, traffic = await _latency_server(0.2)  # p95 ~ 200ms against 50ms
    try:
        spec = {"autoscaling": {"periodSeconds": 1, "minReplicas": 1, "maxReplicas": 6}}
        async with running_operator(str(emulator.url)):
            await api.create_cr(example_cr("shop", **spec))
            await eventually(lambda: api.get(CHILD_RESOURCES["Deployment"], NS, "shop-ranking"))
            pod = {
                "metadata": {
                    "name": "shop-ranking-abc",
                    "namespace": NS,
                    "labels": render.selector_labels("shop", "ranking"),
                },
                "spec": {
                    "containers": [
                        {"name": "ranking", "ports": [{"name": "http", "containerPort": port}]}
                    ]
                },
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            }
            await api.create("v1/pods", NS, pod)

            def scaled() -> bool:
                deployment = api.get(CHILD_RESOURCES["Deployment"], NS, "shop-ranking")
                return bool(deployment and deployment["spec"]["replicas"] > 2)

            await eventually(scaled, timeout=20)
            deployment = api.get(CHILD_RESOURCES["Deployment"], NS, "shop-ranking")
            assert deployment is not None
            assert deployment["spec"]["replicas"] <= 6
            live = await eventually(
                lambda: (
                    (api.get(CR_RESOURCE, NS, "shop") or {}).get("status", {}).get("latencyP95Ms")
                )
            )
            assert live > 100.0  # well above the 50 ms target (the loop is shared)
            events = await eventually(
                lambda: [
                    obj.raw
                    for (res, ns, _), obj in emulator.objects.items()
                    if res == kmock.resource("v1/events")
                    and not obj.deleted
                    and obj.raw.get("reason") == "ScaledUp"
                ]
            )
            assert "ranking 2 -> 4" in events[0]["message"]
    finally:
        traffic.cancel()
        await runner.cleanup()


async def test_status_reads_model_version_and_freshness_from_the_trainer(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    import time

    app = create_app("trainer")
    text = (
        "# TYPE freshrank_trainer_model_version gauge\nfreshrank_trainer_model_version 12\n"
        "# TYPE freshrank_trainer_last_export_timestamp_seconds gauge\n"
        f"freshrank_trainer_last_export_timestamp_seconds {time.time() - 5}\n"
        "# TYPE freshrank_trainer_last_exported_event_timestamp_seconds gauge\n"
        f"freshrank_trainer_last_exported_event_timestamp_seconds {time.time() - 30}\n"
    )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=text)

    trainer_app = web.Application()
    trainer_app.router.add_get("/metrics", metrics)
    del app
    port = free_port()
    runner = await serve(trainer_app, "127.0.0.1", port)
    try:
        async with running_operator(str(emulator.url)):
            await api.create_cr(example_cr("shop"))
            pod = {
                "metadata": {
                    "name": "shop-trainer-0",
                    "namespace": NS,
                    "labels": render.selector_labels("shop", "trainer"),
                },
                "spec": {
                    "containers": [
                        {"name": "trainer", "ports": [{"name": "http", "containerPort": port}]}
                    ]
                },
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            }
            await api.create("v1/pods", NS, pod)
            status = await eventually(
                lambda: (
                    (api.get(CR_RESOURCE, NS, "shop") or {}).get("status", {}).get("modelVersion")
                    and api.get(CR_RESOURCE, NS, "shop")["status"]
                )
            )
            assert status["modelVersion"] == 12
            assert 29.0 <= status["freshnessSeconds"] <= 60.0
            assert status["lastExportTime"].endswith("Z")
    finally:
        await runner.cleanup()


async def test_kafka_topics_are_ensured_on_a_real_broker(
    emulator: kmock.KubernetesEmulator, api: FakeApi, broker: Any, unique_name: str
) -> None:
    from confluent_kafka.admin import AdminClient

    spec = {"kafka": {"bootstrapServers": broker.bootstrap, "partitions": 2}}
    async with running_operator(str(emulator.url), ensure_topics=True):
        await api.create_cr(example_cr(unique_name, **spec))
        await eventually(lambda: _condition(api, unique_name, "Degraded")["status"] == "False")

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for topic in (f"{unique_name}.events", f"{unique_name}.events.dlq"):
        assert topic in topics
        assert len(topics[topic].partitions) == 2


async def test_unreachable_kafka_degrades_naming_kafka_and_retries(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    spec = {"kafka": {"bootstrapServers": f"127.0.0.1:{free_port()}"}}
    async with running_operator(
        str(emulator.url), ensure_topics=True, kafka_timeout_seconds=1.0
    ) as runtime:
        await api.create_cr(example_cr("shop", **spec))
        degraded = await eventually(
            lambda: (
                _condition(api, "shop", "Degraded")["status"] == "True"
                and _condition(api, "shop", "Degraded")
            ),
            timeout=20,
        )
        assert degraded["reason"] == "KafkaUnavailable"
        assert "spec.kafka.bootstrapServers" in degraded["message"]
        # The children were still applied; the operator keeps running and retrying.
        assert len(api.children(NS, "shop")) == len(_expected(api, "shop"))
        assert runtime.client is not None


async def test_kafka_credentials_from_the_secret_reach_the_admin_client(
    emulator: kmock.KubernetesEmulator, api: FakeApi, broker: Any, unique_name: str
) -> None:
    """The embedded broker speaks plaintext only: with the Secret's SASL settings the admin
    client must fail to create the topics (it succeeds without them, test above)."""
    secret = {
        "metadata": {"name": "creds", "namespace": NS},
        "stringData": {
            "username": "alice",
            "password": "s3cret",
            "mechanism": "PLAIN",
            "securityProtocol": "SASL_PLAINTEXT",
        },
    }
    await api.create("v1/secrets", NS, secret)
    spec = {"kafka": {"bootstrapServers": broker.bootstrap, "credentialsSecret": {"name": "creds"}}}
    async with running_operator(str(emulator.url), ensure_topics=True, kafka_timeout_seconds=2.0):
        await api.create_cr(example_cr(unique_name, **spec))
        degraded = await eventually(
            lambda: (
                _condition(api, unique_name, "Degraded")["status"] == "True"
                and _condition(api, unique_name, "Degraded")
            ),
            timeout=30,
        )
    assert degraded["reason"] == "KafkaUnavailable"
    assert "spec.kafka.bootstrapServers" in degraded["message"]
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert f"{unique_name}.events" not in topics


async def test_the_operator_observes_itself(
    emulator: kmock.KubernetesEmulator, api: FakeApi, span_exporter: Any
) -> None:
    """Health and readiness endpoints, Prometheus metrics, and a trace per reconcile."""
    port = free_port()
    span_exporter.clear()
    async with (
        running_operator(
            str(emulator.url), serve_metrics=True, metrics_host="127.0.0.1", metrics_port=port
        ),
        aiohttp.ClientSession() as session,
    ):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: len(api.children(NS, "shop")) == len(_expected(api, "shop")))
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["operator"] == "running"
        reconciled = 'freshrank_operator_reconcile_duration_seconds_count{handler="reconcile"'
        text = ""
        for _ in range(100):
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            if f'{reconciled},outcome="ok"}}' in text:
                break
            await asyncio.sleep(0.1)
        assert f'{reconciled},outcome="ok"}}' in text
        assert 'freshrank_operator_children_applied_total{kind="Deployment"}' in text
    spans = span_exporter.get_finished_spans()
    reconciles = [s for s in spans if s.name == "reconcile"]
    assert reconciles
    assert reconciles[0].attributes["k8s.name"] == "shop"
    applies = [s for s in spans if s.name == "apply"]
    assert applies
    assert applies[0].parent is not None
    assert applies[0].context.trace_id in {r.context.trace_id for r in reconciles}
