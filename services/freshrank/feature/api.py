"""The feature API (aiohttp, port 8081): single and batch reads, JSON and protobuf.

Feature sets are cached as serialized ``UserFeatures``/``ItemFeatures`` bytes framed as an entry
of the repeated field 1 of the batch message, so a protobuf batch response is the cached entries
joined (protobuf's wire format makes that concatenation a valid ``Batch*Response``) and a single
read is an entry without its frame header. Reads go through ``ReadThrough`` (single-flight
misses, refresh ahead of expiry): the missing ids of a batch are one store read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from freshrank.core.codec import id_problem, ids_problem
from freshrank.core.http import REGISTRY_KEY, ReadinessCheck, create_app, json_error
from freshrank.feature.cache import ReadThrough, TTLCache
from freshrank.feature.openapi import openapi_spec
from freshrank.feature.store import STORE_ERRORS, AppliedBatch, FeatureStore, StoreUnavailable
from freshrank.v1 import features_pb2

__all__ = ["MAX_BATCH", "MAX_K", "FeatureApi", "create_feature_app"]

log = logging.getLogger(__name__)
PROTOBUF = "application/x-protobuf"
MAX_BATCH = 1000
MAX_K = 1000
# /readyz answers within this even when the database hangs (a probe must never time out).
READINESS_TIMEOUT_S = 1.0
M = TypeVar("M", bound=Message)
CacheKey = tuple[str, str]
CacheEntry = bytes  # the message framed as an entry of repeated field 1 (see ``_frame``)


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
        app.router.add_get("/v1/users/{user_id}", self._guard(self.get_user))
        app.router.add_post("/v1/users:batch", self._guard(self.batch_users))
        app.router.add_get("/v1/items:popular", self._guard(self.popular_items))
        app.router.add_get("/v1/items/{item_id}", self._guard(self.get_item))
        app.router.add_post("/v1/items:batch", self._guard(self.batch_items))
        app.router.add_get("/openapi.json", self.openapi)

    def invalidate(self, applied: AppliedBatch) -> None:
        """Drop cached feature sets the stream just changed (popularity changes with any item)."""
        keys = [("u", u) for u in applied.users] + [("i", i) for i in applied.items]
        keys += self._popular_keys
        self._popular_keys = set()
        self.cache.invalidate(keys)

    async def close(self) -> None:
        await self.reads.close()

    async def openapi(self, _: web.Request) -> web.Response:
        return _json(openapi_spec(MAX_BATCH, MAX_K))

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
        (framed,) = await self.reads.get_many([("u", user_id)], self._load_users)
        return _reply(request, _unframe(framed), features_pb2.UserFeatures)

    async def batch_users(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchUserFeaturesRequest, "user_ids")
        keys = [("u", u) for u in _valid_ids(ask.user_ids, "user_ids[]")]
        entries = await self.reads.get_many(keys, self._load_users)
        return _reply(request, b"".join(entries), features_pb2.BatchUserFeaturesResponse)

    async def get_item(self, request: web.Request) -> web.Response:
        item_id = _valid_id(request.match_info["item_id"], "item_id")
        (framed,) = await self.reads.get_many([("i", item_id)], self._load_items)
        return _reply(request, _unframe(framed), features_pb2.ItemFeatures)

    async def batch_items(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchItemFeaturesRequest, "item_ids")
        keys = [("i", i) for i in _valid_ids(ask.item_ids, "item_ids[]")]
        entries = await self.reads.get_many(keys, self._load_items)
        return _reply(request, b"".join(entries), features_pb2.BatchItemFeaturesResponse)

    async def popular_items(self, request: web.Request) -> web.Response:
        k = _valid_k(request.query.get("k", "10"))
        (framed,) = await self.reads.get_many([("p", str(k))], self._load_popular)
        return _reply(request, _unframe(framed), features_pb2.PopularItemsResponse)

    # -- loaders (the store read behind a cache miss or refresh) -------------------------

    async def _load_users(self, keys: list[CacheKey]) -> dict[CacheKey, CacheEntry]:
        user_ids = [user_id for _, user_id in keys]
        rows = await self.store.users(user_ids)
        entries = {}
        for key, user_id in zip(keys, user_ids, strict=True):
            head = features_pb2.UserFeatures(user_id=user_id)
            row = rows.get(user_id)
            if row is None:  # unknown user: the empty, well-formed cold-start set
                entries[key] = _frame(head.SerializeToString())
                continue
            head.decayed_activity = row.decayed
            head.event_count = row.event_count
            # The stored history is a serialized UserFeatures with only field 2 set.
            entries[key] = _frame(head.SerializeToString() + row.history)
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
            entries[key] = _frame(message.SerializeToString())
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
            entries[key] = _frame(message.SerializeToString())
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
    """``_valid_id`` for each value; plain ASCII ids (the hot path) in C-level passes."""
    if not all(values):
        raise BadRequest(f"{field} must be a non-empty string")
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


async def _parse(request: web.Request, kind: type[M], field: str) -> M:
    """The request body as ``kind``, from protobuf or JSON (by Content-Type)."""
    raw = await request.read()
    message = kind()
    if request.content_type == PROTOBUF:
        try:
            message.ParseFromString(raw)
        except DecodeError as exc:
            raise BadRequest(f"body is not a valid protobuf {kind.__name__}: {exc}") from None
    else:
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get(field), list):
            raise BadRequest(f'body must be a JSON object with a "{field}" list of strings')
        if not all(isinstance(v, str) for v in data[field]):
            raise BadRequest(f'"{field}" must contain only strings')
        try:
            json_format.ParseDict(data, message)
        except json_format.ParseError as exc:
            raise BadRequest(f"body does not match {kind.__name__}: {exc}") from None
    count = len(getattr(message, field))
    if not 1 <= count <= MAX_BATCH:
        raise BadRequest(f'"{field}" must hold between 1 and {MAX_BATCH} ids, got {count}')
    return message


def _frame(body: bytes) -> bytes:
    """``body`` as an entry of repeated field 1: tag 0x0A (field 1, length-delimited), the
    length as a varint, the bytes. Lengths under 16 KiB (any user's or item's set) take two bytes at
    most, written directly: this runs for every user of every cache miss."""
    n = len(body)
    if n < 0x80:
        return bytes((0x0A, n)) + body
    if n < 0x4000:
        return bytes((0x0A, (n & 0x7F) | 0x80, n >> 7)) + body
    return b"\x0a" + _varint(n) + body


def _unframe(framed: bytes) -> bytes:
    """The message inside a ``_frame`` entry (skip the tag and the length varint)."""
    start = 1
    while framed[start] & 0x80:
        start += 1
    return framed[start + 1 :]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _reply(request: web.Request, body: bytes, kind: type[Message]) -> web.Response:
    if PROTOBUF in request.headers.get("Accept", ""):
        return web.Response(body=body, content_type=PROTOBUF)
    message = kind.FromString(body)
    return _json(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def _json(payload: Any) -> web.Response:
    return web.json_response(payload)
