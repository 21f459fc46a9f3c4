"""Async client for the feature API (port 8081), protobuf on the wire.

It lives in ``core`` because services never import each other: the ranking service and the
tools reach the feature service through this client only.

One ``aiohttp.ClientSession`` per client (pooled connections); every call is bounded by a
deadline. An unknown user is not an error: the service answers an empty feature set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

import aiohttp
from google.protobuf.message import Message

from freshrank.core.contracts import routes
from freshrank.core.protojson import PROTOBUF
from freshrank.v1 import features_pb2

__all__ = ["FeatureClient", "FeatureServiceError"]

M = TypeVar("M", bound=Message)


class FeatureServiceError(RuntimeError):
    """The feature service answered with an error status (the message carries its reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"feature service answered {status}: {reason}")
        self.status = status
        self.reason = reason


class FeatureClient:
    """``async with FeatureClient(url) as client: await client.users(["u1", "u2"])``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 1.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._owns_session = session is None
        self._session = session

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
            )
        return self._session

    async def __aenter__(self) -> FeatureClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def user(
        self, user_id: str, *, deadline_s: float | None = None
    ) -> features_pb2.UserFeatures:
        """One user's features; history most recent first (empty for an unknown user)."""
        return await self._call(
            "GET", routes.feature_user_path(user_id), None, features_pb2.UserFeatures(), deadline_s
        )

    async def users(
        self, user_ids: Sequence[str], *, deadline_s: float | None = None
    ) -> list[features_pb2.UserFeatures]:
        """Features for each id, in the order asked."""
        body = features_pb2.BatchUserFeaturesRequest(user_ids=list(user_ids))
        reply = await self._call(
            "POST",
            routes.FEATURE_USERS_BATCH,
            body,
            features_pb2.BatchUserFeaturesResponse(),
            deadline_s,
        )
        return list(reply.users)

    async def item(
        self, item_id: str, *, deadline_s: float | None = None
    ) -> features_pb2.ItemFeatures:
        return await self._call(
            "GET", routes.feature_item_path(item_id), None, features_pb2.ItemFeatures(), deadline_s
        )

    async def items(
        self, item_ids: Sequence[str], *, deadline_s: float | None = None
    ) -> list[features_pb2.ItemFeatures]:
        body = features_pb2.BatchItemFeaturesRequest(item_ids=list(item_ids))
        reply = await self._call(
            "POST",
            routes.FEATURE_ITEMS_BATCH,
            body,
            features_pb2.BatchItemFeaturesResponse(),
            deadline_s,
        )
        return list(reply.items)

    async def popular(
        self, k: int, *, deadline_s: float | None = None
    ) -> list[features_pb2.ItemFeatures]:
        """The ``k`` items with the highest decayed popularity, best first."""
        path = routes.feature_popular_path(k)
        reply = await self._call("GET", path, None, features_pb2.PopularItemsResponse(), deadline_s)
        return list(reply.items)

    async def _call(
        self, method: str, path: str, body: Message | None, reply: M, deadline_s: float | None
    ) -> M:
        headers = {"Accept": PROTOBUF}
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = PROTOBUF
            data = body.SerializeToString()
        async with asyncio.timeout(deadline_s if deadline_s is not None else self._timeout_s):
            async with self._client().request(
                method, self._base + path, data=data, headers=headers
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    raise FeatureServiceError(response.status, _reason(payload))
        reply.ParseFromString(payload)
        return reply


def _reason(payload: bytes) -> str:
    import json

    try:
        return str(json.loads(payload).get("error", ""))
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")
