"""The feature API (aiohttp, port 8081): single and batch reads, JSON and protobuf.

Feature sets are cached as ``FeatureEntry`` objects, each serialized once per format it is
asked in (protobuf or JSON, see ``FeatureEntry``). Reads go through ``ReadThrough``
(single-flight misses, refresh ahead of expiry): the missing ids of a batch are one store read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf.message import DecodeError, Message
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from freshrank.core import protojson
from freshrank.core.codec import id_problem, ids_problem
from freshrank.core.contracts import routes
from freshrank.core.http import REGISTRY_KEY, ReadinessCheck, create_app, json_error
from freshrank.core.protojson import JSON, PROTOBUF
from freshrank.feature.cache import ReadThrough, TTLCache
from freshrank.feature.openapi import openapi_spec, request_rules
from freshrank.feature.store import STORE_ERRORS, AppliedBatch, FeatureStore, StoreUnavailable
from freshrank.v1 import features_pb2

__all__ = ["MAX_BATCH", "MAX_K", "FeatureApi", "create_feature_app"]

log = logging.getLogger(__name__)
MAX_BATCH = 1000
MAX_K = 1000
# /readyz answers within this even when the database hangs (a probe must never time out).
READINESS_TIMEOUT_S = 1.0
_REQUEST_RULES = request_rules(MAX_BATCH)
H = TypeVar("H", bound=Message)
CacheKey = tuple[str, str]


class FeatureEntry:
    """One cached answer (a user's or an item's features, or a popular-items list): ``wire`` is
    the message serialized once, when it is loaded; ``json`` its JSON, printed on the first JSON
    read and kept. A batch answer is made of the entries as they are (``_reply_batch``)."""

    __slots__ = ("_json", "kind", "wire")

    def __init__(self, kind: type[Message], wire: bytes) -> None:
        self.kind = kind
        self.wire = wire
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = protojson.to_json(self.kind.FromString(self.wire))
        return self._json


CacheEntry = FeatureEntry


class BadRequest(ValueError):
    """The request is malformed; the message is the reason sent back with the 400."""


class FeatureApi:
    def __init__(
        self, store: FeatureStore, cache: TTLCache[CacheKey, CacheEntry], *, query_timeout_s: float
    ) -> None:
        self.store = store
        self.cache = cache
        self.reads = ReadThrough(cache, load_timeout_s=query_timeout_s)
        self.query_timeout_s = query_timeout_s
        self._popular_keys: set[CacheKey] = set()

    def install(self, app: web.Application) -> None:
        app[REGISTRY_KEY].register(_CacheMetrics(self.reads))
        app.router.add_get(routes.FEATURE_USER, self._guard(self.get_user))
        app.router.add_post(routes.FEATURE_USERS_BATCH, self._guard(self.batch_users))
        app.router.add_get(routes.FEATURE_POPULAR, self._guard(self.popular_items))
        app.router.add_get(routes.FEATURE_ITEM, self._guard(self.get_item))
        app.router.add_post(routes.FEATURE_ITEMS_BATCH, self._guard(self.batch_items))
        app.router.add_get(routes.OPENAPI, self.openapi)

    def invalidate(self, applied: AppliedBatch) -> None:
        """Drop cached feature sets the stream just changed (popularity changes with any item)."""
        keys = [("u", u) for u in applied.users] + [("i", i) for i in applied.items]
        keys += self._popular_keys
        self._popular_keys = set()
        self.cache.invalidate(keys)

    async def close(self) -> None:
        await self.reads.close()

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_spec(MAX_BATCH, MAX_K))

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        try:
            async with asyncio.timeout(min(self.query_timeout_s, READINESS_TIMEOUT_S)):
                await self.store.ping()  # refused at once while the breaker is open
        except STORE_ERRORS as exc:
            return False, {"store": f"unavailable: {type(exc).__name__}"}
        return True, {"store": "ok"}

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Map bad input to 400 and an unreachable store to 503 with ``Retry-After``, with a
        reason, no trace. While the store's breaker is open the 503 costs no store call."""

        async def guarded(request: web.Request) -> web.Response:
            try:
                async with asyncio.timeout(self.query_timeout_s):
                    return await handler(request)
            except BadRequest as exc:
                return json_error(400, str(exc))
            except StoreUnavailable as exc:
                return _unavailable(exc.retry_after_s)
            except STORE_ERRORS as exc:
                log.warning("feature store unavailable: %s", type(exc).__name__)
                return _unavailable(1)

        return guarded

    # -- handlers -------------------------------------------------------------------------

    async def get_user(self, request: web.Request) -> web.Response:
        user_id = _valid_id(request.match_info["user_id"], "user_id")
        (entry,) = await self.reads.get_many([("u", user_id)], self._load_users)
        return _reply_one(request, entry)

    async def batch_users(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchUserFeaturesRequest)
        keys = [("u", u) for u in _valid_ids(ask.user_ids, "user_ids")]
        entries = await self.reads.get_many(keys, self._load_users)
        return _reply_batch(request, entries, "users")

    async def get_item(self, request: web.Request) -> web.Response:
        item_id = _valid_id(request.match_info["item_id"], "item_id")
        (entry,) = await self.reads.get_many([("i", item_id)], self._load_items)
        return _reply_one(request, entry)

    async def batch_items(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchItemFeaturesRequest)
        keys = [("i", i) for i in _valid_ids(ask.item_ids, "item_ids")]
        entries = await self.reads.get_many(keys, self._load_items)
        return _reply_batch(request, entries, "items")

    async def popular_items(self, request: web.Request) -> web.Response:
        k = _valid_k(request.query.get("k", "10"))
        (entry,) = await self.reads.get_many([("p", str(k))], self._load_popular)
        return _reply_one(request, entry)

    # -- loaders (the store read behind a cache miss or refresh) -------------------------

    async def _load_users(self, keys: list[CacheKey]) -> dict[CacheKey, CacheEntry]:
        user_ids = [user_id for _, user_id in keys]
        rows = await self.store.users(user_ids)
        entries = {}
        for key, user_id in zip(keys, user_ids, strict=True):
            head = features_pb2.UserFeatures(user_id=user_id)
            row = rows.get(user_id)
            if row is None:  # unknown user: the empty, well-formed cold-start set
                entries[key] = FeatureEntry(features_pb2.UserFeatures, head.SerializeToString())
                continue
            head.decayed_activity = row.decayed
            head.event_count = row.event_count
            # The stored history is a serialized UserFeatures with only field 2 set: protobuf
            # parses concatenated encodings as one message, so this is the whole user's.
            wire = head.SerializeToString() + row.history
            entries[key] = FeatureEntry(features_pb2.UserFeatures, wire)
        return entries

    async def _load_items(self, keys: list[CacheKey]) -> dict[CacheKey, CacheEntry]:
        item_ids = [item_id for _, item_id in keys]
        rows = await self.store.items(item_ids)
        entries = {}
        for key, item_id in zip(keys, item_ids, strict=True):
            message = features_pb2.ItemFeatures(item_id=item_id)
            row = rows.get(item_id)
            if row is not None:
                message.decayed_popularity = row.decayed
                message.event_count = row.event_count
            entries[key] = FeatureEntry(features_pb2.ItemFeatures, message.SerializeToString())
        return entries

    async def _load_popular(self, keys: list[CacheKey]) -> dict[CacheKey, CacheEntry]:
        entries = {}
        for key in keys:
            rows = await self.store.popular(int(key[1]))
            message = features_pb2.PopularItemsResponse(
                items=[
                    features_pb2.ItemFeatures(
                        item_id=r.item_id, decayed_popularity=r.decayed, event_count=r.event_count
                    )
                    for r in rows
                ]
            )
            entries[key] = FeatureEntry(
                features_pb2.PopularItemsResponse, message.SerializeToString()
            )
        # Any applied batch can reorder the ranking: ``invalidate`` drops these keys.
        self._popular_keys.update(keys)
        return entries


class _CacheMetrics(Collector):
    """Cache counters read at scrape time (nothing to update on the request path)."""

    def __init__(self, reads: ReadThrough[CacheKey, CacheEntry]) -> None:
        self.reads = reads

    def collect(self) -> Iterable[Metric]:
        lookups = CounterMetricFamily(
            "freshrank_feature_cache_lookups", "feature cache lookups by result", labels=["result"]
        )
        lookups.add_metric(["hit"], self.reads.cache.hits)
        lookups.add_metric(["miss"], self.reads.cache.misses)
        yield lookups
        yield CounterMetricFamily(
            "freshrank_feature_cache_shared_misses",
            "misses answered by a store read another request had started",
            value=self.reads.joined,
        )
        yield CounterMetricFamily(
            "freshrank_feature_cache_refreshed_keys",
            "cached feature sets reloaded ahead of expiry",
            value=self.reads.refreshed,
        )


def create_feature_app(
    api: FeatureApi, *, readiness: list[ReadinessCheck] | None = None
) -> web.Application:
    app = create_app("feature", readiness=[api.readiness, *(readiness or [])])
    api.install(app)
    return app


# -- wire helpers ---------------------------------------------------------------------------


def _unavailable(retry_after_s: int) -> web.Response:
    response = json_error(503, "feature store unavailable")
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def _valid_id(value: str, field: str) -> str:
    if not value:
        raise BadRequest(f"{field} must be a non-empty string")
    problem = id_problem(value)
    if problem is not None:
        raise BadRequest(f"{field} {problem}")
    return value


def _valid_ids(values: Sequence[str], field: str) -> Sequence[str]:
    """``_valid_id`` for each of 1 to ``MAX_BATCH`` values; plain ASCII ids (the hot path) in
    C-level passes."""
    if not 1 <= len(values) <= MAX_BATCH:
        raise BadRequest(f'"{field}" must hold between 1 and {MAX_BATCH} ids, got {len(values)}')
    if not all(values):
        raise BadRequest(f"{field}[] must be a non-empty string")
    problem = ids_problem(values)
    if problem is not None:
        raise BadRequest(f"{field}{problem}")
    return values


def _valid_k(raw: str) -> int:
    try:
        k = int(raw)
    except ValueError:
        raise BadRequest(f"k must be an integer, got {raw[:32]!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be between 1 and {MAX_K}, got {k}")
    return k


async def _parse(request: web.Request, kind: type[H]) -> H:
    """The request body as ``kind``, from protobuf or JSON (by Content-Type)."""
    raw = await request.read()
    if request.content_type == PROTOBUF:
        message = kind()
        try:
            message.ParseFromString(raw)
        except DecodeError as exc:
            raise BadRequest(f"body is not a valid protobuf {kind.__name__}: {exc}") from None
        return message
    try:
        return protojson.parse_json(raw, kind, _REQUEST_RULES)
    except protojson.BadJson as exc:
        raise BadRequest(str(exc)) from None


def _wants_protobuf(request: web.Request) -> bool:
    return PROTOBUF in request.headers.get("Accept", "")


def _reply_one(request: web.Request, entry: CacheEntry) -> web.Response:
    if _wants_protobuf(request):
        return web.Response(body=entry.wire, content_type=PROTOBUF)
    return web.Response(body=entry.json, content_type=JSON)


def _reply_batch(request: web.Request, entries: Sequence[CacheEntry], field: str) -> web.Response:
    """The Batch*Response holding ``entries`` in its repeated ``field`` (number 1), from their
    cached encodings: ``SerializedBatch`` writes the same bytes (see features.proto)."""
    if _wants_protobuf(request):
        batch = features_pb2.SerializedBatch(entries=[e.wire for e in entries])
        return web.Response(body=batch.SerializeToString(), content_type=PROTOBUF)
    body = protojson.json_list(field, [e.json for e in entries])
    return web.Response(body=body, content_type=JSON)
