"""The real Kopf runtime against the real API server (envtest: etcd, kube-apiserver,
kube-controller-manager), logged in with a kubeconfig, one namespace per test.

The API server validates, defaults and versions the CRs; the controller manager turns
Deployments and StatefulSets into Pods and garbage-collects through ownerReferences. No kubelet
runs: what one would report (Pods Running and Ready, a Pod's IP) is written to the Pods' status
by the test, and the trainer's and ranking's metrics come from real HTTP servers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from envtest import ClusterApi, eventually, example_cr, running_operator

from freshrank.core.http import create_app, serve
from freshrank.embedded import free_port
from freshrank.embedded.kubernetes import EmbeddedKubernetes
from freshrank_operator import render

pytestmark = pytest.mark.integration

# Pods need a kubelet-less minute at most: generous deadlines for a busy 2-core machine.
SLOW = 60.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _fingerprint(kind: str, obj: dict[str, Any]) -> str:
    """What moves when the operator rewrites a child: a workload's generation (its status is
    the controllers'), any other object's resourceVersion."""
    if kind in {"Deployment", "StatefulSet"}:
        return f"generation {obj['metadata']['generation']}"
    return f"resourceVersion {obj['metadata']['resourceVersion']}"


async def test_create_renders_every_child_owned_by_the_cr(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    async with running_operator(kube_cluster, cluster_api.namespace):
        cr = await cluster_api.create_example("shop", timeout=SLOW)
        for obj in (await cluster_api.children("shop")).values():
            [owner] = obj["metadata"]["ownerReferences"]
            assert owner["uid"] == cr["metadata"]["uid"]
            assert owner["controller"] is True
        ready = await eventually(lambda: cluster_api.condition("shop", "Ready"), timeout=SLOW)
        assert ready["status"] == "False"
        assert ready["reason"] in {
            f"{p}NotReady" for p in ("Feature", "Trainer", "Triton", "Ranking")
        }

        async def selector() -> dict[str, Any] | None:
            status = await cluster_api.status("shop")
            return status if status.get("selector") else None

        status = await eventually(selector, timeout=SLOW)
        assert status["observedGeneration"] == 1
        assert status["selector"] == (
            "app.kubernetes.io/instance=shop,app.kubernetes.io/component=ranking"
        )


async def test_status_conditions_move_as_pods_become_ready(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    ranking = {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "ranking"}
    async with running_operator(kube_cluster, cluster_api.namespace):
        await cluster_api.create_example("shop", timeout=SLOW)

        async def two_ranking_pods() -> bool:
            return len(await cluster_api.pods(ranking)) == 2

        await eventually(two_ranking_pods, timeout=SLOW)

        async def only_ranking_short() -> dict[str, Any] | bool:
            # Pods appear as the controllers create them (the trainer's after its claim).
            await cluster_api.report_ready("shop", keep_unready=1, component="ranking")
            ready = await cluster_api.condition("shop", "Ready")
            return ready["reason"] == "RankingNotReady" and ready

        ready = await eventually(only_ranking_short, timeout=SLOW, interval=0.5)
        assert "ranking: 1/2 ready" in ready["message"]

        async def all_ready() -> bool:
            await cluster_api.report_ready("shop")
            return (await cluster_api.condition("shop", "Ready"))["status"] == "True"

        await eventually(all_ready, timeout=SLOW, interval=0.5)
        assert (await cluster_api.condition("shop", "Degraded"))["status"] == "False"
        assert (await cluster_api.condition("shop", "Progressing"))["status"] == "False"
        assert (await cluster_api.status("shop"))["replicas"] == 2
    # Status went through the status subresource (the API server ignores status written to
    # the main resource): every manager of status fields wrote it there.
    live = await cluster_api.cr("shop")
    assert live is not None
    status_writers = [
        entry
        for entry in live["metadata"]["managedFields"]
        if "f:status" in (entry.get("fieldsV1") or {})
    ]
    assert status_writers
    assert all(entry.get("subresource") == "status" for entry in status_writers)


async def test_a_spec_change_rewrites_only_the_affected_children(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    async with running_operator(kube_cluster, cluster_api.namespace):
        await cluster_api.create_example("shop", timeout=SLOW)
        before = {k: _fingerprint(k[0], o) for k, o in (await cluster_api.children("shop")).items()}
        await cluster_api.patch_spec("shop", {"trainer": {"batchSize": 1024}})

        async def trainer_updated() -> bool:
            sts = await cluster_api.get("apps/v1", "StatefulSet", "shop-trainer")
            env = sts["spec"]["template"]["spec"]["containers"][0]["env"] if sts else []
            return {"name": "FRESHRANK_BATCH_SIZE", "value": "1024"} in env

        await eventually(trainer_updated, timeout=SLOW)

        async def observed() -> bool:
            return (await cluster_api.status("shop")).get("observedGeneration") == 2

        await eventually(observed, timeout=SLOW)
        after = {k: _fingerprint(k[0], o) for k, o in (await cluster_api.children("shop")).items()}
        changed = {key for key in before if after[key] != before[key]}
        assert changed == {("StatefulSet", "shop-trainer")}


async def test_delete_removes_every_child(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    async with running_operator(kube_cluster, cluster_api.namespace):
        await cluster_api.create_example("shop", timeout=SLOW)
        await cluster_api.delete_cr("shop")

        async def gone() -> bool:
            return not await cluster_api.children("shop") and await cluster_api.cr("shop") is None

        await eventually(gone, timeout=SLOW)


async def test_a_deletion_the_watch_missed_stops_the_worker(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    """A watch that re-lists reports no DELETED event for what went in between, and a stale
    event can revive a CR after its deletion: the worker finds it gone before applying
    anything and the operator forgets it (it used to re-apply the children, which the garbage
    collector removed, each removal waking the next reconcile)."""
    async with running_operator(kube_cluster, cluster_api.namespace) as runtime:
        await cluster_api.create_example("shop", timeout=SLOW)
        controller = runtime.controller
        assert controller is not None
        body = await cluster_api.cr("shop")
        assert body is not None
        uid = body["metadata"]["uid"]
        await eventually(lambda: uid in controller.states, timeout=SLOW)
        task = controller.states[uid].task
        assert task is not None
        loop = task.get_loop()
        await cluster_api.delete_cr("shop")
        await eventually(lambda: uid not in controller.states, timeout=SLOW)  # DELETED came

        async def replay_without_the_deletion() -> asyncio.Task[None] | None:
            controller.on_cr("MODIFIED", copy.deepcopy(body))  # the CR as it was
            return controller.states[uid].task

        worker = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(replay_without_the_deletion(), loop)
        )
        assert worker is not None
        await eventually(worker.done, timeout=SLOW)
        assert uid not in controller.states

        async def gone() -> bool:
            return not await cluster_api.children("shop") and await cluster_api.cr("shop") is None

        await eventually(gone, timeout=SLOW)


async def test_switching_engine_prunes_what_is_no_longer_rendered(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    hpa = ("HorizontalPodAutoscaler", "shop-ranking")
    async with running_operator(kube_cluster, cluster_api.namespace):
        await cluster_api.create_example("shop", timeout=SLOW)
        await cluster_api.patch_spec("shop", {"autoscaling": {"engine": "hpa"}})

        async def has_hpa() -> bool:
            return hpa in await cluster_api.children("shop")

        await eventually(has_hpa, timeout=SLOW)
        await cluster_api.patch_spec("shop", {"autoscaling": {"engine": "operator"}})

        async def no_hpa() -> bool:
            return hpa not in await cluster_api.children("shop")

        await eventually(no_hpa, timeout=SLOW)


async def test_a_missing_secret_degrades_naming_the_field_then_recovers(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:9", "credentialsSecret": {"name": "creds"}}}
    async with running_operator(kube_cluster, cluster_api.namespace) as runtime:
        await cluster_api.create_cr(example_cr("shop", cluster_api.namespace, **spec))
        degraded = await eventually(lambda: cluster_api.condition("shop", "Degraded"))
        assert degraded["status"] == "True"
        assert degraded["reason"] == "KafkaSecretNotFound"
        assert "spec.kafka.credentialsSecret.name" in degraded["message"]
        assert not await cluster_api.children("shop")
        assert runtime.client is not None  # still running: no crash loop
        # The Secret appears without the password: still degraded, now naming the key.
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"username": _b64("u")},
        }
        await cluster_api.create(secret)

        async def key_missing() -> dict[str, Any] | bool:
            degraded = await cluster_api.condition("shop", "Degraded")
            return degraded["reason"] == "KafkaSecretKeyMissing" and degraded

        degraded = await eventually(key_missing, timeout=SLOW)
        assert degraded["status"] == "True"
        assert "spec.kafka.credentialsSecret" in degraded["message"]
        assert "'password'" in degraded["message"]
        await cluster_api.client.merge_patch(
            "v1", "Secret", cluster_api.namespace, "creds", {"data": {"password": _b64("p")}}
        )

        async def recovered() -> bool:
            return (await cluster_api.condition("shop", "Degraded"))["status"] == "False"

        await eventually(recovered, timeout=SLOW)
        await eventually(lambda: cluster_api.all_children_applied("shop"), timeout=SLOW)


async def _scrape_target(cluster_api: ClusterApi, name: str, component: str, port: int) -> None:
    """A Pod of ``component`` whose metrics are served on 127.0.0.1:``port`` (as a kubelet
    would report it: Running, with that IP). Not adopted by the ReplicaSet (no template hash)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": render.selector_labels("shop", component)},
        "spec": {
            "containers": [
                {
                    "name": component,
                    "image": "freshrank:test",
                    "ports": [{"name": "http", "containerPort": port}],
                }
            ]
        },
    }
    await cluster_api.create(pod)
    await cluster_api.client.merge_patch(
        "v1",
        "Pod",
        cluster_api.namespace,
        name,
        {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}},
        subresource="status",
    )


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
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    runner, port, traffic = await _latency_server(0.2)  # p95 ~ 200ms against 50ms
    try:
        spec = {"autoscaling": {"periodSeconds": 1, "minReplicas": 1, "maxReplicas": 6}}
        async with running_operator(kube_cluster, cluster_api.namespace):
            await cluster_api.create_cr(example_cr("shop", cluster_api.namespace, **spec))
            await eventually(
                lambda: cluster_api.get("apps/v1", "Deployment", "shop-ranking"), timeout=SLOW
            )
            await _scrape_target(cluster_api, "shop-ranking-scraped", "ranking", port)

            async def scaled() -> dict[str, Any] | None:
                deployment = await cluster_api.get("apps/v1", "Deployment", "shop-ranking")
                return deployment if deployment and deployment["spec"]["replicas"] > 2 else None

            deployment = await eventually(scaled, timeout=SLOW)
            assert deployment["spec"]["replicas"] <= 6

            async def p95() -> float | None:
                return (await cluster_api.status("shop")).get("latencyP95Ms")

            assert await eventually(p95, timeout=SLOW) > 100.0  # well above the 50 ms target

            async def scaled_up_events() -> list[dict[str, Any]]:
                events = await cluster_api.client.list("v1", "Event", cluster_api.namespace)
                return [e for e in events if e.get("reason") == "ScaledUp"]

            events = await eventually(scaled_up_events, timeout=SLOW)
            assert "ranking 2 -> 4" in events[0]["message"]
            assert events[0]["involvedObject"]["name"] == "shop"
    finally:
        traffic.cancel()
        await runner.cleanup()


async def test_status_reads_model_version_and_freshness_from_the_trainer(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    import time

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
    port = free_port()
    runner = await serve(trainer_app, "127.0.0.1", port)
    try:
        async with running_operator(kube_cluster, cluster_api.namespace):
            await cluster_api.create_cr(example_cr("shop", cluster_api.namespace))
            await _scrape_target(cluster_api, "shop-trainer-scraped", "trainer", port)

            async def versioned() -> dict[str, Any] | None:
                status = await cluster_api.status("shop")
                return status if status.get("modelVersion") else None

            status = await eventually(versioned, timeout=SLOW)
            assert status["modelVersion"] == 12
            assert 29.0 <= status["freshnessSeconds"] <= 90.0
            assert status["lastExportTime"].endswith("Z")
    finally:
        await runner.cleanup()


async def test_kafka_topics_are_ensured_on_a_real_broker(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, broker: Any, unique_name: str
) -> None:
    from confluent_kafka.admin import AdminClient

    spec = {"kafka": {"bootstrapServers": broker.bootstrap, "partitions": 2}}
    async with running_operator(kube_cluster, cluster_api.namespace, ensure_topics=True):
        await cluster_api.create_cr(example_cr(unique_name, cluster_api.namespace, **spec))

        async def healthy() -> bool:
            return (await cluster_api.condition(unique_name, "Degraded"))["status"] == "False"

        await eventually(healthy, timeout=SLOW)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for topic in (f"{unique_name}.events", f"{unique_name}.events.dlq"):
        assert topic in topics
        assert len(topics[topic].partitions) == 2


async def _degraded(cluster_api: ClusterApi, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | bool:
        degraded = await cluster_api.condition(name, "Degraded")
        return degraded["status"] == "True" and degraded

    found: dict[str, Any] = await eventually(check, timeout=SLOW)
    return found


async def test_unreachable_kafka_degrades_naming_kafka_and_retries(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi
) -> None:
    spec = {"kafka": {"bootstrapServers": f"127.0.0.1:{free_port()}"}}
    async with running_operator(
        kube_cluster, cluster_api.namespace, ensure_topics=True, kafka_timeout_seconds=1.0
    ) as runtime:
        await cluster_api.create_cr(example_cr("shop", cluster_api.namespace, **spec))
        degraded = await _degraded(cluster_api, "shop")
        assert degraded["reason"] == "KafkaUnavailable"
        assert "spec.kafka.bootstrapServers" in degraded["message"]
        # The children were still applied; the operator keeps running and retrying.
        await eventually(lambda: cluster_api.all_children_applied("shop"), timeout=SLOW)
        assert runtime.client is not None


async def test_kafka_credentials_from_the_secret_reach_the_admin_client(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, broker: Any, unique_name: str
) -> None:
    """The embedded broker speaks plaintext only: with the Secret's SASL settings the admin
    client must fail to create the topics (it succeeds without them, test above)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {
            "username": "alice",
            "password": "s3cret",
            "mechanism": "PLAIN",
            "securityProtocol": "SASL_PLAINTEXT",
        },
    }
    await cluster_api.create(secret)
    spec = {"kafka": {"bootstrapServers": broker.bootstrap, "credentialsSecret": {"name": "creds"}}}
    async with running_operator(
        kube_cluster, cluster_api.namespace, ensure_topics=True, kafka_timeout_seconds=2.0
    ):
        await cluster_api.create_cr(example_cr(unique_name, cluster_api.namespace, **spec))
        degraded = await _degraded(cluster_api, unique_name)
    assert degraded["reason"] == "KafkaUnavailable"
    assert "spec.kafka.bootstrapServers" in degraded["message"]
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert f"{unique_name}.events" not in topics


async def test_the_operator_observes_itself(
    kube_cluster: EmbeddedKubernetes, cluster_api: ClusterApi, span_exporter: Any
) -> None:
    """Health and readiness endpoints, Prometheus metrics, and a trace per reconcile."""
    port = free_port()
    span_exporter.clear()
    async with (
        running_operator(
            kube_cluster,
            cluster_api.namespace,
            serve_metrics=True,
            metrics_host="127.0.0.1",
            metrics_port=port,
        ),
        aiohttp.ClientSession() as session,
    ):
        await cluster_api.create_example("shop", timeout=SLOW)
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["operator"] == "running"
        reconciled = 'freshrank_operator_reconcile_duration_seconds_count{handler="reconcile"'

        async def metrics_text() -> str | None:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            return text if f'{reconciled},outcome="ok"}}' in text else None

        text = await eventually(metrics_text, timeout=SLOW)
        assert 'freshrank_operator_children_applied_total{kind="Deployment"}' in text
    spans = span_exporter.get_finished_spans()
    reconciles = [s for s in spans if s.name == "reconcile"]
    assert reconciles
    assert reconciles[0].attributes["k8s.name"] == "shop"
    applies = [s for s in spans if s.name == "apply"]
    assert applies
    assert applies[0].parent is not None
    assert applies[0].context.trace_id in {r.context.trace_id for r in reconciles}
