"""User history and popular items from the feature service, bounded by a deadline.

Calls go through the feature service's client (``freshrank.core.feature_client``, protobuf
on the wire) over the ranking service's one pooled ``aiohttp.ClientSession`` (whose
OpenTelemetry trace config passes ``traceparent`` on). This module adds what the hot path
needs around it: a deadline that covers bounded retries on connection errors, a span for the
lookup, and a latency metric. A failed or late lookup returns ``None``: the ranker then
ranks with an empty history instead of failing the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from freshrank.core.feature_client import FeatureClient, FeatureServiceError
from freshrank.ranking.metrics import RankingMetrics

__all__ = ["FeatureLookup", "PopularItem"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("freshrank.ranking")
PopularItem = tuple[str, float]
T = TypeVar("T")
_FAILURES = (FeatureServiceError, aiohttp.ClientError, OSError, TimeoutError, DecodeError)
_RETRYABLE = (aiohttp.ClientConnectionError, ConnectionError)


class FeatureLookup:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        deadline_s: float,
        retries: int,
        metrics: RankingMetrics,
    ) -> None:
        self.enabled = bool(base_url)
        self._client = FeatureClient(base_url, session=session, timeout_s=deadline_s)
        self._deadline_s = deadline_s
        self._retries = retries
        self._metrics = metrics

    async def history(self, user_id: str) -> list[str] | None:
        """The user's item IDs, most recent first ([] if unknown); None if unavailable."""
        if not self.enabled:
            return None
        start = time.perf_counter()
        outcome = "ok"
        with _tracer.start_as_current_span(
            "feature.lookup", kind=SpanKind.CLIENT, attributes={"feature.route": "users"}
        ) as span:
            try:
                features = await self._with_retries(
                    lambda remaining: self._client.user(user_id, deadline_s=remaining),
                    self._deadline_s,
                )
            except _FAILURES as exc:
                outcome = "error"
                span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
                return None
            finally:
                self._metrics.feature_latency.labels(outcome=outcome).observe(
                    time.perf_counter() - start
                )
            history = [entry.item_id for entry in features.history]
            span.set_attribute("feature.history_length", len(history))
            return history

    async def popular(self, k: int, deadline_s: float = 1.0) -> list[PopularItem] | None:
        """Items by decayed popularity, best first; None when the feature service cannot say."""
        if not self.enabled:
            return None
        try:
            items = await self._with_retries(
                lambda remaining: self._client.popular(k, deadline_s=remaining), deadline_s
            )
        except _FAILURES as exc:
            log.debug("popular items unavailable", extra={"error": str(exc)})
            return None
        return [(item.item_id, float(item.decayed_popularity)) for item in items]

    async def _with_retries(self, call: Callable[[float], Awaitable[T]], deadline_s: float) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        error: Exception = TimeoutError("deadline spent")
        for _ in range(self._retries + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await call(remaining)
            except _RETRYABLE as exc:  # refused/reset: one more try within the same deadline
                error = exc
        raise error
