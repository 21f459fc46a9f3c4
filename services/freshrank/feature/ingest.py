"""The ingest loop: ``<name>.events`` -> feature store, exactly-once in effect.

Per polled batch: malformed messages go to the dead-letter topic (flushed first), the good
events are applied in one database transaction that also records their event ids, and only
then are the Kafka offsets committed. A crash anywhere re-delivers the batch; the event-id
table turns the replay into a no-op. A store outage stalls the loop (retry with backoff)
without committing, so nothing is lost.

Event ids older than ``processed_retention_s`` of stream time are pruned after a committed batch
(see ``freshrank.feature.store`` for why that window bounds redelivery): one bounded delete per
``PRUNE_INTERVAL_S``, or per batch while a backlog remains, so ingest never stalls on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import (
    AsyncConsumer,
    DeadLetters,
    decode_batch,
    next_offsets,
    security_config,
)
from freshrank.core.telemetry import context_from_headers
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import STORE_ERRORS, AppliedBatch, FeatureStore

__all__ = ["Ingester"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("freshrank.feature")
_MAX_LINKS = 32  # span links to producer traces per batch (enough to follow a sample)
_MAX_BACKOFF_S = 5.0
PRUNE_INTERVAL_S = 30.0
PRUNE_LIMIT = 10_000


class Ingester:
    def __init__(
        self,
        settings: FeatureSettings,
        store: FeatureStore,
        on_applied: Callable[[AppliedBatch], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_applied = on_applied
        self.applied_events = 0
        self.committed_messages = 0
        self.dead_lettered = 0
        self.pruned = 0
        self.prune_interval_s = PRUNE_INTERVAL_S
        self.store_healthy = True
        self._next_prune = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        security = security_config(s)
        consumer = AsyncConsumer(
            s.bootstrap_servers, s.consumer_group, [s.events_topic], **security
        )
        dead_letters = DeadLetters(s.bootstrap_servers, s.dlq_topic, **security)
        log.info("ingest started", extra={"topic": s.events_topic, "group": s.consumer_group})
        try:
            while not stop.is_set():
                messages = await consumer.poll_batch(s.ingest_batch, 0.2)
                if not messages:
                    continue
                batch = decode_batch(messages)
                if batch.malformed:
                    for message, reason in batch.malformed:
                        dead_letters.publish(message, reason)
                    await asyncio.get_running_loop().run_in_executor(None, dead_letters.flush)
                    self.dead_lettered += len(batch.malformed)
                events = [event for _, event in batch.events]
                links = [_producer_link(m) for m, _ in batch.events[:_MAX_LINKS]]
                with _tracer.start_as_current_span(
                    "feature.ingest",
                    kind=SpanKind.CONSUMER,
                    links=[link for link in links if link.context.is_valid],
                    attributes={"messaging.batch.message_count": len(messages)},
                ) as span:
                    applied = await self._apply_until_done(events, stop)
                    if applied is None:
                        return  # stopping during an outage: the batch is redelivered later
                    span.set_attribute("feature.events_applied", applied.applied)
                # Offsets only after the transaction committed: the effect is durable.
                await consumer.commit(next_offsets(messages))
                self.applied_events += applied.applied
                self.committed_messages += len(messages)
                self.on_applied(applied)
                await self._prune_if_due()
        finally:
            await consumer.close()

    async def _apply_until_done(
        self, events: list[InteractionEvent], stop: asyncio.Event
    ) -> AppliedBatch | None:
        backoff = 0.1
        while True:
            try:
                applied = await self.store.apply(events)
                self.store_healthy = True
                return applied
            except STORE_ERRORS as exc:
                self.store_healthy = False
                log.warning("feature store write failed, retrying: %s", type(exc).__name__)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                    return None
                except TimeoutError:
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _prune_if_due(self) -> None:
        window_s = self.settings.processed_retention_s
        now = time.monotonic()
        if window_s <= 0 or now < self._next_prune:
            return
        try:
            pruned = await self.store.prune_processed(window_s * 1000, limit=PRUNE_LIMIT)
        except STORE_ERRORS as exc:
            log.warning("pruning processed event ids failed: %s", type(exc).__name__)
            pruned = 0
        self.pruned += pruned
        # A full delete means more are waiting: take the next chunk after the next batch.
        self._next_prune = now if pruned >= PRUNE_LIMIT else now + self.prune_interval_s


def _producer_link(message: Message) -> Link:
    """A link to the producer's span (from the message's ``traceparent`` header)."""
    headers = message.headers()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return Link(trace.get_current_span(context_from_headers(pairs)).get_span_context())
