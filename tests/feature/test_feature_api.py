"""The feature API over real HTTP: JSON and protobuf, cold start, bad input, cache, store down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from feature_helpers import event
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freshrank.core import protojson
from freshrank.core.codec import EventType
from freshrank.core.feature_client import FeatureClient, FeatureServiceError
from freshrank.embedded import free_port
from freshrank.feature.api import FeatureApi, create_feature_app
from freshrank.feature.cache import TTLCache
from freshrank.feature.store import FeatureStore, create_engine
from freshrank.v1 import features_pb2

pytestmark = pytest.mark.integration
PROTOBUF = "application/x-protobuf"


@pytest.fixture
def feature_api(store: FeatureStore) -> FeatureApi:
    return FeatureApi(store, TTLCache(1000, 60.0), query_timeout_s=2.0)


@pytest.fixture
async def client(
    feature_api: FeatureApi,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_feature_app(feature_api))) as running:
        yield running


@pytest.fixture
async def feature_client(
    client: TestClient[web.Request, web.Application],
) -> AsyncIterator[FeatureClient]:
    async with FeatureClient(str(client.make_url(""))) as running:
        yield running


async def _seed(store: FeatureStore) -> None:
    await store.apply(
        [
            event(1, "alice", "book", 1_000, EventType.VIEW),
            event(2, "alice", "pen", 2_000, EventType.PURCHASE),
            event(3, "bob", "book", 2_000),
        ]
    )


async def test_user_json_has_history_most_recent_first(
    store: FeatureStore, client: TestClient[web.Request, web.Application]
) -> None:
    await _seed(store)
    response = await client.get("/v1/users/alice")
    assert response.status == 200
    body = await response.json()
    assert body["user_id"] == "alice"
    assert body["event_count"] == "2"  # proto3 JSON: int64 as a string
    assert [(h["item_id"], h["type"]) for h in body["history"]] == [
        ("pen", "PURCHASE"),
        ("book", "VIEW"),
    ]
    assert body["decayed_activity"] == pytest.approx(1.5)


async def test_unknown_user_gets_empty_well_formed_features(
    client: TestClient[web.Request, web.Application], feature_client: FeatureClient
) -> None:
    response = await client.get("/v1/users/stranger")
    assert response.status == 200
    assert await response.json() == {
        "user_id": "stranger",
        "history": [],
        "decayed_activity": 0.0,
        "event_count": "0",
    }
    assert await feature_client.user("stranger") == features_pb2.UserFeatures(user_id="stranger")


async def test_batch_reads_keep_request_order_in_protobuf_and_json(
    store: FeatureStore,
    client: TestClient[web.Request, web.Application],
    feature_client: FeatureClient,
) -> None:
    await _seed(store)
    users = await feature_client.users(["bob", "nobody", "alice"])
    assert [u.user_id for u in users] == ["bob", "nobody", "alice"]
    assert [len(u.history) for u in users] == [1, 0, 2]
    assert users[2].history[0].item_id == "pen"
    response = await client.post("/v1/users:batch", json={"user_ids": ["alice", "bob"]})
    assert [u["user_id"] for u in (await response.json())["users"]] == ["alice", "bob"]
    items = await feature_client.items(["pen", "book", "ghost"])
    assert [(i.item_id, i.event_count) for i in items] == [("pen", 1), ("book", 2), ("ghost", 0)]
    single = await feature_client.item("book")
    assert single.decayed_popularity == pytest.approx(1.5)  # 1 s apart, half-life 1 s


async def test_a_batch_answer_is_the_batch_message_in_both_formats(
    store: FeatureStore, client: TestClient[web.Request, web.Application]
) -> None:
    """Cached entries make the batch (``SerializedBatch``): the bytes parse as the
    ``BatchUserFeaturesResponse`` of the single reads, and the JSON is that message printed."""
    await _seed(store)
    for _ in range(2):  # a miss, then the cached entries
        ask = {"user_ids": ["alice", "nobody", "bob"]}
        raw = await client.post("/v1/users:batch", json=ask, headers={"Accept": PROTOBUF})
        wire = await raw.read()
        message = features_pb2.BatchUserFeaturesResponse.FromString(wire)
        singles = [
            features_pb2.UserFeatures.FromString(
                await (await client.get(f"/v1/users/{u}", headers={"Accept": PROTOBUF})).read()
            )
            for u in ask["user_ids"]
        ]
        assert list(message.users) == singles
        assert [len(u.history) for u in singles] == [2, 0, 1]
        printed = await (await client.post("/v1/users:batch", json=ask)).read()
        assert printed == protojson.to_json(message)


async def test_popular_items(store: FeatureStore, feature_client: FeatureClient) -> None:
    await _seed(store)
    popular = await feature_client.popular(1)
    assert [(i.item_id, i.event_count) for i in popular] == [("book", 2)]
    assert [i.item_id for i in await feature_client.popular(10)] == ["book", "pen"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/users:batch", b"{not json", "not valid JSON"),
        ("/v1/users:batch", b'{"ids": []}', "unknown fields: ids"),
        ("/v1/users:batch", b'{"user_ids": [1, 2]}', "user_ids[0] must be a string"),
        ("/v1/users:batch", b'{"user_ids": []}', "between 1 and 1000"),
        ("/v1/users:batch", b'{"user_ids": [""]}', "non-empty"),
        ("/v1/items:batch", b"[]", "body must be a JSON object"),
    ],
)
async def test_malformed_json_requests_get_400_with_reason(
    client: TestClient[web.Request, web.Application], path: str, body: bytes, reason: str
) -> None:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert reason in (await response.json())["error"]


async def test_malformed_protobuf_and_query_get_400(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(
        "/v1/users:batch", data=b"\xff\xff\xff", headers={"Content-Type": PROTOBUF}
    )
    assert response.status == 400
    assert "protobuf" in (await response.json())["error"]
    for k in ("abc", "0", "100000"):
        response = await client.get(f"/v1/items:popular?k={k}")
        assert response.status == 400
        assert "k must be" in (await response.json())["error"]
    too_many = {"user_ids": [f"u{i}" for i in range(1001)]}
    assert (await client.post("/v1/users:batch", json=too_many)).status == 400


async def test_ids_breaking_the_event_contract_get_400_not_503(
    client: TestClient[web.Request, web.Application],
) -> None:
    # The same id rule as the event codec: PostgreSQL refused a NUL as a DataError (a 503).
    response = await client.get("/v1/users/a%00b")
    assert response.status == 400
    assert "control character" in (await response.json())["error"]
    for body in ({"user_ids": ["ok", "tab\there"]}, {"user_ids": ["é" * 129]}):
        response = await client.post("/v1/users:batch", json=body)
        assert response.status == 400, body
    response = await client.post("/v1/users:batch", json={"user_ids": ["é" * 128, "ユーザー"]})
    assert response.status == 200


async def test_openapi_lists_every_route(client: TestClient[web.Request, web.Application]) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/v1/users/{user_id}",
        "/v1/users:batch",
        "/v1/items/{item_id}",
        "/v1/items:batch",
        "/v1/items:popular",
    }
    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():  # generated from features.proto, field for field
        if name != "Error":
            fields = getattr(features_pb2, name).DESCRIPTOR.fields_by_name
            assert list(schema["properties"]) == list(fields), name
    assert schemas["UserFeatures"]["properties"]["event_count"]["type"] == "string"  # int64


async def test_cache_serves_reads_and_the_stream_invalidates_it(
    store: FeatureStore, feature_api: FeatureApi, feature_client: FeatureClient
) -> None:
    await _seed(store)
    assert (await feature_client.user("alice")).event_count == 2
    assert (await feature_client.popular(1))[0].item_id == "book"
    misses = feature_api.cache.misses
    assert (await feature_client.user("alice")).event_count == 2
    assert feature_api.cache.misses == misses  # served from the cache
    # A write not announced to the cache stays invisible until the stream invalidates it.
    applied = await store.apply([event(9, "alice", "pen", 3_000), event(10, "bob", "pen", 3_000)])
    assert (await feature_client.user("alice")).event_count == 2
    feature_api.invalidate(applied)
    assert (await feature_client.user("alice")).event_count == 3
    assert (await feature_client.popular(1))[0].item_id == "pen"


async def test_cache_counters_are_exported(
    feature_api: FeatureApi,
    feature_client: FeatureClient,
    client: TestClient[web.Request, web.Application],
) -> None:
    await feature_client.users(["alice", "bob"])
    await feature_client.users(["alice"])
    metrics = await (await client.get("/metrics")).text()
    assert 'freshrank_feature_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'freshrank_feature_cache_lookups_total{result="miss"} 2.0' in metrics
    assert "freshrank_feature_cache_refreshed_keys_total 0.0" in metrics


async def test_store_down_answers_503_and_not_ready() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    down = FeatureStore(create_engine(url), history_length=5, half_life_ms=1000.0)
    api = FeatureApi(down, TTLCache(10, 1.0), query_timeout_s=2.0)
    async with TestClient(TestServer(create_feature_app(api))) as client:
        for method, path, body in (
            ("GET", "/v1/users/alice", None),
            ("POST", "/v1/users:batch", {"user_ids": ["alice"]}),
            ("GET", "/v1/items:popular?k=3", None),
        ):
            response = await client.request(method, path, json=body)
            assert response.status == 503
            assert int(response.headers["Retry-After"]) >= 1
            text = await response.text()
            assert "feature store unavailable" in text
            assert "Traceback" not in text
            assert "psycopg" not in text
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["ready"] is False
        assert (await client.get("/healthz")).status == 200
        async with FeatureClient(str(client.make_url(""))) as feature_client:
            with pytest.raises(FeatureServiceError) as error:
                await feature_client.user("alice")
            assert error.value.status == 503
    await down.close()


async def test_http_and_sql_spans_join_the_callers_trace(
    span_exporter: InMemorySpanExporter,
    store: FeatureStore,
    client: TestClient[web.Request, web.Application],
) -> None:
    await _seed(store)
    span_exporter.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get(
        "/v1/users/alice", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    assert response.status == 200
    spans = [
        s for s in span_exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id
    ]
    server = [s for s in spans if s.name == "GET /v1/users/{user_id}"]
    assert len(server) == 1
    sql = [s for s in spans if s.name.startswith("SELECT")]
    assert sql, [s.name for s in spans]
    assert all(s.parent is not None and s.parent.span_id == server[0].context.span_id for s in sql)
