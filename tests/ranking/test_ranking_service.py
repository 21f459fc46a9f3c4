"""The ranking service with real parts: tritonserver serving a model the online learner trained
on a planted stream, and the feature service ingesting that stream from the real broker.

One Triton, one feature service and one ranking app for the module (they take seconds to
start). The last tests take the dependencies down one after the other: the feature service
(rank with empty history), then Triton (flagged popularity fallback), then bring Triton back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import torch
import tritonclient.http as httpclient
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from ranking_support import HISTORY_LEN, WORLD, OtlpJsonReceiver, TrainedModel, overlap

from freshrank.core.codec import InteractionEvent
from freshrank.core.feature_client import FeatureClient
from freshrank.core.http import serve
from freshrank.core.kafka import EventProducer, ensure_topics
from freshrank.core.model_repo import ModelRepository
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton, free_port
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings
from freshrank.ranking.service import create_ranking_app
from freshrank.ranking.settings import RankingSettings
from freshrank.v1 import ranking_pb2

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
NAME = f"rk{uuid.uuid4().hex[:6]}"
MODEL = f"{NAME}-ranker"
INGESTED_EVENTS = 4000  # the stream's tail: enough for histories and popularity


@dataclasses.dataclass
class Features:
    service: FeatureService
    url: str
    popular: list[str]  # item IDs by decayed popularity, as the feature service ranks them


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def features(
    broker: EmbeddedBroker, trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Features]:
    """The feature service, having ingested the stream's tail from the broker."""
    settings = FeatureSettings(
        name=NAME,
        bootstrap_servers=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('features') / 'f.db'}",
        host="127.0.0.1",
        port=free_port(),
    )
    events = list(trained.stream.events())[-INGESTED_EVENTS:]
    await asyncio.to_thread(_produce, broker.bootstrap, settings.events_topic, events)
    service = FeatureService(settings)
    await service.start()
    url = f"http://127.0.0.1:{settings.port}"
    async with FeatureClient(url) as client:
        for _ in range(300):  # the newest event's item tops its user's history once ingested
            last = await client.user(events[-1].user_id)
            if last.history and last.history[0].item_id == events[-1].item_id:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the feature service did not ingest the events")
        popular = [item.item_id for item in await client.popular(50)]
    yield Features(service, url, popular)
    await service.stop()


def _produce(bootstrap: str, topic: str, events: list[InteractionEvent]) -> None:
    ensure_topics(bootstrap, [topic])
    producer = EventProducer(bootstrap, topic)
    for event in events:
        producer.send(event)
    producer.flush()


@pytest.fixture(scope="module")
def triton_traces() -> Iterator[OtlpJsonReceiver]:
    receiver = OtlpJsonReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def served_triton(
    tmp_path_factory: pytest.TempPathFactory,
    trained: TrainedModel,
    triton_traces: OtlpJsonReceiver,
) -> Iterator[EmbeddedTriton]:
    """Triton with the model loaded, exporting its own OpenTelemetry spans to ``triton_traces``."""
    workdir = tmp_path_factory.mktemp("ranking-triton")
    repository = workdir / "models"
    trained.write_version(ModelRepository(repository, MODEL))
    triton = EmbeddedTriton(workdir, repository, load_models=[MODEL])
    triton.process.argv.extend(triton_traces.triton_args())
    with triton:
        yield triton


class Running:
    def __init__(self, url: str, registry: CollectorRegistry, session: aiohttp.ClientSession):
        self.url = url
        self.registry = registry
        self.session = session

    async def rank(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.url}/v1/rank", json=body) as response:
            return response.status, await response.json()

    def feature_errors(self) -> float:
        value = self.registry.get_sample_value(
            "freshrank_feature_lookup_duration_seconds_count", {"outcome": "error"}
        )
        return value or 0.0

    def fallbacks(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "freshrank_ranking_fallback_total", {"reason": reason}
        )
        return value or 0.0

    def fallback_counts(self) -> dict[str, float]:
        """Fallbacks by reason so far (what an assertion on ``fallback`` should show)."""
        reasons = ("no_ready_model", "triton_error", "circuit_open", "deadline", "bad_output")
        return {reason: self.fallbacks(reason) for reason in (*reasons, "model_not_loaded")}


async def _start(settings: RankingSettings) -> tuple[web.AppRunner, Running]:
    registry = CollectorRegistry()
    app = await create_ranking_app(settings, registry=registry)
    runner = await serve(app, "127.0.0.1", settings.port)
    session = aiohttp.ClientSession()
    return runner, Running(f"http://127.0.0.1:{settings.port}", registry, session)


def _load_latest(triton: EmbeddedTriton, *, dropped: int) -> bool:
    """Load the repository's newest version; whether ``dropped`` is still READY afterwards."""
    client = httpclient.InferenceServerClient(triton.http_url)  # gevent: one thread only
    client.load_model(MODEL)
    return bool(client.is_model_ready(MODEL, str(dropped)))


def _settings(triton: EmbeddedTriton, features: Features, **overrides: Any) -> RankingSettings:
    values: dict[str, Any] = {
        "name": NAME,
        "port": free_port(),
        "triton_url": triton.http_url,
        "feature_url": features.url,
        "model_repository": str(triton.model_repository),
        "model_poll_s": 0.2,
        "breaker_open_s": 0.3,
        # Generous deadlines: the test machine is 2 shared cores; the deadline paths are tested
        # on purpose (a tiny deadline, a dead Triton, a stopped feature service).
        "triton_deadline_ms": 2000.0,
        "feature_deadline_ms": 1000.0,
    }
    values.update(overrides)
    return RankingSettings(**values)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ranking(served_triton: EmbeddedTriton, features: Features) -> AsyncIterator[Running]:
    runner, running = await _start(_settings(served_triton, features))
    yield running
    await running.session.close()
    await runner.cleanup()


async def test_ranks_planted_taste_items_without_candidates(ranking: Running) -> None:
    overlaps = []
    for user in range(40):
        status, body = await ranking.rank({"user_id": f"u{user}", "k": 10})
        assert status == 200, body
        assert body["fallback"] is False
        assert body["model_version"] == "1"  # int64: a string in JSON
        ranked = [item["item_id"] for item in body["items"]]
        assert len(ranked) == 10
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)
        overlaps.append(overlap(ranked, ranking_truth(user)))
    chance = 10 / WORLD.items
    assert sum(overlaps) / len(overlaps) > 3 * chance, overlaps


def ranking_truth(user: int) -> list[str]:
    from freshrank.sim import SyntheticStream

    return SyntheticStream(WORLD).top_items(user, 10, drifted=False)


async def test_ranks_given_candidates_with_the_models_scores(
    ranking: Running, trained: TrainedModel
) -> None:
    candidates = [f"i{i}" for i in range(100)]
    status, body = await ranking.rank({"user_id": "u3", "k": 5, "candidates": candidates})
    assert status == 200, body
    with torch.no_grad():
        rows = torch.from_numpy(trained.items.rows(candidates)).reshape(1, -1)
        user = torch.tensor([[trained.users.row("u3")]])
        expected = trained.model(user, torch.zeros((1, HISTORY_LEN), dtype=torch.int64), rows)[0]
    best = torch.argsort(expected, descending=True)[:5].tolist()
    assert [item["item_id"] for item in body["items"]] == [candidates[i] for i in best]
    assert body["items"][0]["score"] == pytest.approx(float(expected[best[0]]), abs=1e-4)


async def test_unknown_user_and_items_get_the_cold_start_row(ranking: Running) -> None:
    status, body = await ranking.rank(
        {"user_id": "never-seen", "k": 3, "candidates": ["i1", "no-such-item", "i2"]}
    )
    assert status == 200, body
    assert body["fallback"] is False
    assert {item["item_id"] for item in body["items"]} == {"i1", "no-such-item", "i2"}


async def test_protobuf_request_and_response(ranking: Running) -> None:
    request = ranking_pb2.RankRequest(user_id="u5", k=4)
    async with ranking.session.post(
        f"{ranking.url}/v1/rank",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/x-protobuf"
        reply = ranking_pb2.RankResponse.FromString(await response.read())
    assert len(reply.items) == 4
    assert reply.model_version == 1
    assert not reply.fallback


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"k": 3}, "user_id"),
        ({"user_id": "u1", "k": "ten"}, "k must be an integer"),
        ({"user_id": "u1", "k": 100_000}, "k must be between"),
        ({"user_id": "u1", "candidates": "i1"}, "candidates must be a list"),
        ({"user_id": "u1", "candidates": ["i1", 7]}, "candidates[1] must be a string"),
        ({"user_id": "u1", "context": {"a": 1}}, "context"),
        ({"user_id": "u1", "colour": "red"}, "unknown fields: colour"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_requests_get_400_with_the_reason(
    ranking: Running, body: Any, reason: str
) -> None:
    status, reply = await ranking.rank(body)
    assert status == 400
    assert reason in reply["error"]


async def test_bad_protobuf_and_json_bodies_get_400(ranking: Running) -> None:
    for data, content_type in (
        (b"\xff\xff\xff", "application/x-protobuf"),
        (b"{", "application/json"),
    ):
        async with ranking.session.post(
            f"{ranking.url}/v1/rank", data=data, headers={"Content-Type": content_type}
        ) as response:
            assert response.status == 400
            assert "body is not" in (await response.json())["error"]


async def test_openapi_describes_the_rank_route(ranking: Running) -> None:
    async with ranking.session.get(f"{ranking.url}/openapi.json") as response:
        spec = await response.json()
    assert spec["openapi"].startswith("3.")
    assert "post" in spec["paths"]["/v1/rank"]
    assert spec["components"]["schemas"]["RankRequest"]["required"] == ["user_id"]


async def test_one_trace_covers_ranking_feature_lookup_and_triton(
    ranking: Running, span_exporter: InMemorySpanExporter, triton_traces: OtlpJsonReceiver
) -> None:
    span_exporter.clear()
    status, _ = await ranking.rank({"user_id": "u7", "k": 5})
    assert status == 200
    spans = {span.name: span for span in span_exporter.get_finished_spans()}
    server, feature, triton = spans["POST /v1/rank"], spans["feature.lookup"], spans["triton.infer"]
    feature_server = spans["GET /v1/users/{user_id}"]  # the feature service, in this process
    trace_ids = {s.context.trace_id for s in (server, feature, feature_server, triton)}
    assert len(trace_ids) == 1
    assert feature.parent is not None
    assert feature.parent.span_id == server.context.span_id
    assert feature.attributes is not None
    assert feature.attributes["feature.history_length"] > 0
    assert triton.parent is not None
    assert triton.parent.span_id == server.context.span_id
    assert triton.attributes is not None
    assert triton.attributes["triton.model_version"] == 1

    # Triton itself received our traceparent: its request span is a child of triton.infer.
    ours = (f"{triton.context.trace_id:032x}", f"{triton.context.span_id:016x}")
    for _ in range(100):
        if any((trace_id, parent) == ours for trace_id, parent, _ in triton_traces.spans):
            break
        await asyncio.sleep(0.1)
    joined = [name for trace_id, parent, name in triton_traces.spans if (trace_id, parent) == ours]
    assert joined == ["InferRequest"], triton_traces.spans[-5:]


async def test_metrics_expose_route_latency_and_triton_latency(ranking: Running) -> None:
    await ranking.rank({"user_id": "u1"})
    async with ranking.session.get(f"{ranking.url}/metrics") as response:
        text = await response.text()
    assert 'freshrank_http_request_duration_seconds_count{method="POST",route="/v1/rank"' in text
    assert 'freshrank_triton_request_duration_seconds_count{outcome="ok",scorer="triton"}' in text
    assert "freshrank_ranking_model_version 1.0" in text


async def test_triton_slower_than_the_deadline_gives_flagged_fallback(
    served_triton: EmbeddedTriton, features: Features
) -> None:
    runner, running = await _start(_settings(served_triton, features, triton_deadline_ms=0.001))
    try:
        status, body = await running.rank({"user_id": "u1", "k": 5})
        assert status == 200
        assert body["fallback"] is True
        assert body["model_version"] == "0"
        assert running.fallbacks("deadline") == 1
        assert [item["item_id"] for item in body["items"]] == features.popular[:5]
    finally:
        await running.session.close()
        await runner.cleanup()


async def test_grpc_protocol_serves_the_same_ranking(
    ranking: Running, served_triton: EmbeddedTriton, features: Features
) -> None:
    settings = _settings(
        served_triton, features, triton_url=served_triton.grpc_url, triton_protocol="grpc"
    )
    runner, running = await _start(settings)
    try:
        body = {"user_id": "u4", "k": 5, "candidates": [f"i{i}" for i in range(50)]}
        status, over_grpc = await running.rank(body)
        assert status == 200
        assert over_grpc["fallback"] is False
        _, over_http = await ranking.rank(body)
        assert [i["item_id"] for i in over_grpc["items"]] == [
            i["item_id"] for i in over_http["items"]
        ]
    finally:
        await running.session.close()
        await runner.cleanup()


async def test_a_version_swapped_in_by_triton_is_used_before_the_next_poll(
    served_triton: EmbeddedTriton, trained: TrainedModel, features: Features
) -> None:
    """Triton serves one version: loading version 2 drops version 1 at once. A ranking
    service still pinned to version 1 (its next poll an hour away) re-resolves and ranks on
    version 2 instead of answering with a fallback. Leaves version 2 served."""
    runner, running = await _start(_settings(served_triton, features, model_poll_s=3600.0))
    try:
        body = {"user_id": "u3", "k": 5}
        for _ in range(100):  # the watcher's first poll, at startup
            _, first = await running.rank(body)
            if not first["fallback"]:
                break
            await asyncio.sleep(0.1)
        assert first["model_version"] == "1"
        repository = ModelRepository(served_triton.model_repository, MODEL)
        newer = await asyncio.to_thread(trained.write_version, repository)
        assert not await asyncio.to_thread(_load_latest, served_triton, dropped=1)

        status, second = await running.rank(body)
        assert status == 200
        assert second["fallback"] is False
        assert int(second["model_version"]) == newer.version == 2
        assert [i["item_id"] for i in second["items"]] == [i["item_id"] for i in first["items"]]
        assert running.fallbacks("version_unavailable") == 0
    finally:
        await running.session.close()
        await runner.cleanup()


async def test_feature_service_down_ranks_with_empty_history(
    ranking: Running, features: Features
) -> None:
    """Takes the feature service down for the rest of the module."""
    errors_before = ranking.feature_errors()
    await features.service.stop()
    for user in range(5):
        status, body = await ranking.rank({"user_id": f"u{user}", "k": 5})
        assert status == 200, body
        # The model still ranks, without history.
        assert body["fallback"] is False, ranking.fallback_counts()
        assert len(body["items"]) == 5
    assert ranking.feature_errors() - errors_before == 5


async def test_killing_triton_gives_fallbacks_and_restarting_recovers(
    ranking: Running, served_triton: EmbeddedTriton, features: Features
) -> None:
    """Runs last in this module: it takes Triton down and brings it back."""
    served_triton.process.kill()
    for _ in range(20):
        status, body = await ranking.rank({"user_id": "u2", "k": 5})
        assert status == 200, body
        assert body["fallback"] is True
        assert body["model_version"] == "0"
        # The feature service is down too: the cached popular list still answers.
        assert [item["item_id"] for item in body["items"]] == features.popular[:5]
    with_candidates = await ranking.rank({"user_id": "u2", "k": 2, "candidates": ["i1", "i2"]})
    assert with_candidates[0] == 200
    assert with_candidates[1]["fallback"] is True
    # Which one depends on timing: the call failing, the breaker open, or the watcher having
    # seen Triton gone; each says Triton is down.
    down = ("triton_error", "circuit_open", "no_ready_model")
    assert sum(ranking.fallbacks(reason) for reason in down) >= 1

    await asyncio.to_thread(served_triton.start)
    await asyncio.to_thread(
        httpclient.InferenceServerClient(served_triton.http_url).load_model, MODEL
    )
    body = {}
    for _ in range(50):
        status, body = await ranking.rank({"user_id": "u2", "k": 5})
        assert status == 200
        if not body["fallback"]:
            break
        await asyncio.sleep(0.2)
    assert body["fallback"] is False
    assert int(body["model_version"]) == max(
        ModelRepository(served_triton.model_repository, MODEL).versions()
    )
