"""The feature API (aiohttp, port 8081): single and batch reads, JSON and protobuf.

Feature sets are cached as serialized ``UserFeatures``/``ItemFeatures`` bytes, so a protobuf
batch response is the cached messages framed as the repeated field 1 of the batch message
(protobuf's wire format makes that concatenation a valid ``Batch*Response``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError

from freshrank.core.http import REGISTRY_KEY, ReadinessCheck, create_app, json_error
from freshrank.feature.cache import TTLCache
from freshrank.feature.openapi import openapi_spec
from freshrank.feature.store import AppliedBatch, FeatureStore
from freshrank.v1 import features_pb2

__all__ = ["MAX_BATCH", "MAX_K", "FeatureApi", "create_feature_app"]

log = logging.getLogger(__name__)
PROTOBUF = "application/x-protobuf"
MAX_BATCH = 1000
MAX_K = 1000
MAX_ID_LENGTH = 256
STORE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
M = TypeVar("M", bound=Message)
CacheKey = tuple[str, str]
CacheEntry = tuple[int, bytes]  # (offset of the message, framed bytes)


class BadRequest(ValueError):
    """The request is malformed; the message is the reason sent back with the 400."""


class FeatureApi:
    def __init__(
        self, store: FeatureStore, cache: TTLCache[CacheKey, CacheEntry], *, query_timeout_s: float
    ) -> None:
        self.store = store
        self.cache = cache
        self.query_timeout_s = query_timeout_s
        self._hits: Any = None
        self._misses: Any = None

    def install(self, app: web.Application) -> None:
        lookups = Counter(
            "freshrank_feature_cache_lookups",
            "feature cache lookups by result",
            ["result"],
            registry=app[REGISTRY_KEY],
        )
        self._hits, self._misses = lookups.labels(result="hit"), lookups.labels(result="miss")
        app.router.add_get("/v1/users/{user_id}", self._guard(self.get_user))
        app.router.add_post("/v1/users:batch", self._guard(self.batch_users))
        app.router.add_get("/v1/items:popular", self._guard(self.popular_items))
        app.router.add_get("/v1/items/{item_id}", self._guard(self.get_item))
        app.router.add_post("/v1/items:batch", self._guard(self.batch_items))
        app.router.add_get("/openapi.json", self.openapi)

    def invalidate(self, applied: AppliedBatch) -> None:
        """Drop cached feature sets the stream just changed (popularity changes with any item)."""
        keys = [("u", u) for u in applied.users] + [("i", i) for i in applied.items]
        keys += [("p", k) for k in self._popular_keys()]
        self.cache.invalidate(keys)

    def _popular_keys(self) -> list[str]:
        return [key for kind, key in self.cache.snapshot_keys() if kind == "p"]

    async def openapi(self, _: web.Request) -> web.Response:
        return _json(openapi_spec(MAX_BATCH, MAX_K))

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        try:
            async with asyncio.timeout(self.query_timeout_s):
                await self.store.ping()
        except STORE_ERRORS as exc:
            return False, {"store": f"unavailable: {type(exc).__name__}"}
        return True, {"store": "ok"}

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Map bad input to 400 and an unreachable store to 503, with a reason, no trace."""

        async def guarded(request: web.Request) -> web.Response:
            try:
                async with asyncio.timeout(self.query_timeout_s):
                    return await handler(request)
            except BadRequest as exc:
                return json_error(400, str(exc))
            except STORE_ERRORS as exc:
                log.warning("feature store unavailable: %s", type(exc).__name__)
                return json_error(503, "feature store unavailable")

        return guarded

    # -- handlers -------------------------------------------------------------------------

    async def get_user(self, request: web.Request) -> web.Response:
        user_id = _valid_id(request.match_info["user_id"], "user_id")
        ((offset, framed),) = await self._users([user_id])
        return _reply(request, framed[offset:], features_pb2.UserFeatures)

    async def batch_users(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchUserFeaturesRequest, "user_ids")
        bodies = await self._users([_valid_id(u, "user_ids[]") for u in ask.user_ids])
        return _reply(request, _joined(bodies), features_pb2.BatchUserFeaturesResponse)

    async def get_item(self, request: web.Request) -> web.Response:
        item_id = _valid_id(request.match_info["item_id"], "item_id")
        ((offset, framed),) = await self._items([item_id])
        return _reply(request, framed[offset:], features_pb2.ItemFeatures)

    async def batch_items(self, request: web.Request) -> web.Response:
        ask = await _parse(request, features_pb2.BatchItemFeaturesRequest, "item_ids")
        bodies = await self._items([_valid_id(i, "item_ids[]") for i in ask.item_ids])
        return _reply(request, _joined(bodies), features_pb2.BatchItemFeaturesResponse)

    async def popular_items(self, request: web.Request) -> web.Response:
        k = _valid_k(request.query.get("k", "10"))
        key = ("p", str(k))
        body = self._cached(key)
        if body is None:
            generation = self.cache.generation
            rows = await self.store.popular(k)
            message = features_pb2.PopularItemsResponse(
                items=[
                    features_pb2.ItemFeatures(
                        item_id=r.item_id, decayed_popularity=r.decayed, event_count=r.event_count
                    )
                    for r in rows
                ]
            )
            body = message.SerializeToString()
            self.cache.put(key, (0, body), generation)
        return _reply(request, body, features_pb2.PopularItemsResponse)

    # -- read-through ---------------------------------------------------------------------

    def _count(self, hits: int, misses: int) -> None:
        if self._hits is not None:
            self._hits.inc(hits)
            self._misses.inc(misses)

    def _cached(self, key: CacheKey) -> bytes | None:
        entry = self.cache.get(key)
        self._count(entry is not None, entry is None)
        return None if entry is None else entry[1][entry[0] :]

    async def _framed(
        self,
        kind: str,
        ids: list[str],
        load: Callable[[list[str]], Awaitable[dict[str, bytes]]],
    ) -> list[tuple[int, bytes]]:
        """Each id's feature set framed as a repeated field 1 entry, from cache or ``load``."""
        get = self.cache.get
        entries = [get((kind, i)) for i in ids]
        missing = [i for i, entry in zip(ids, entries, strict=True) if entry is None]
        self._count(len(ids) - len(missing), len(missing))
        if not missing:
            return entries  # type: ignore[return-value]
        generation = self.cache.generation
        loaded = {i: _frame(body) for i, body in (await load(missing)).items()}
        for i, entry in loaded.items():
            self.cache.put((kind, i), entry, generation)
        return [e if e is not None else loaded[i] for i, e in zip(ids, entries, strict=True)]

    async def _users(self, user_ids: list[str]) -> list[tuple[int, bytes]]:
        return await self._framed("u", user_ids, self._load_users)

    async def _items(self, item_ids: list[str]) -> list[tuple[int, bytes]]:
        return await self._framed("i", item_ids, self._load_items)

    async def _load_users(self, user_ids: list[str]) -> dict[str, bytes]:
        rows = await self.store.users(user_ids)
        bodies = {}
        for user_id in user_ids:
            row = rows.get(user_id)
            head = features_pb2.UserFeatures(user_id=user_id)
            if row is None:  # unknown user: the empty, well-formed cold-start set
                bodies[user_id] = head.SerializeToString()
                continue
            head.decayed_activity = row.decayed
            head.event_count = row.event_count
            # The stored history is a serialized UserFeatures with only field 2 set.
            bodies[user_id] = head.SerializeToString() + row.history
        return bodies

    async def _load_items(self, item_ids: list[str]) -> dict[str, bytes]:
        rows = await self.store.items(item_ids)
        bodies = {}
        for item_id in item_ids:
            row = rows.get(item_id)
            message = features_pb2.ItemFeatures(item_id=item_id)
            if row is not None:
                message.decayed_popularity = row.decayed
                message.event_count = row.event_count
            bodies[item_id] = message.SerializeToString()
        return bodies


def create_feature_app(
    api: FeatureApi, *, readiness: list[ReadinessCheck] | None = None
) -> web.Application:
    app = create_app("feature", readiness=[api.readiness, *(readiness or [])])
    api.install(app)
    return app


# -- wire helpers ---------------------------------------------------------------------------


def _valid_id(value: str, field: str) -> str:
    if not value:
        raise BadRequest(f"{field} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field} longer than {MAX_ID_LENGTH} characters")
    return value


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


def _frame(body: bytes) -> tuple[int, bytes]:
    """``body`` as an entry of repeated field 1 (tag 0x0A, length-delimited), and where the
    message starts: batch replies are the entries joined, single replies the message alone."""
    header = b"\x0a" + _varint(len(body))
    return len(header), header + body


def _joined(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(framed for _, framed in entries)


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
