"""The ingest loop: ``<name>.events`` -> feature store, exactly-once in effect.

Per polled batch: the events that keep the contract (``freshrank.core.codec``, each checked
against its record's time) are applied in one database transaction that also records their
event ids; the messages that break it, and any event the database refuses, go to the
dead-letter topic (flushed); only then are the Kafka offsets committed. A crash anywhere
re-delivers the batch; the event-id table turns the replay into a no-op.

Store errors are classified (``freshrank.feature.store.is_data_error``):

- the database refused the data (a ``DataError``/``IntegrityError``): retrying the same batch
  would fail forever and stop ingest for good, so the batch is bisected until the refused
  events stand alone; the rest is applied, each refused event is dead-lettered with the
  database's reason, and ingest commits past it;
- anything else is an outage: the loop retries with backoff without committing (nothing is
  lost), and ``stuck`` turns the service's readiness false until a write succeeds.

This ingester is the deployment's one owner of dead-lettering: every consumer group applies
the same contract to the same record and reaches the same verdict, so one publisher is enough
(two published every bad message twice), and this is the consumer that also sees the
store's verdict. The trainer skips what the contract rejects. Dead letters are at least once:
a crash after publishing and before the commit publishes again (``freshrank-source`` names
the original offset, for de-duplication).

Event ids older than ``processed_retention_s`` of stream time are pruned after a committed batch
(see ``freshrank.feature.store`` for why that window bounds redelivery): one bounded delete per
``PRUNE_INTERVAL_S``, or per batch while a backlog remains, so ingest never stalls on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Message
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import (
    AsyncConsumer,
    DeadLetters,
    decode_batch,
    event_time_window,
    next_offsets,
    record_time_ms,
    security_config,
)
from freshrank.core.telemetry import context_from_headers
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import STORE_ERRORS, AppliedBatch, FeatureStore, is_data_error

__all__ = ["Ingester"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("freshrank.feature")
_MAX_LINKS = 32  # span links to producer traces per batch (enough to follow a sample)
_MAX_BACKOFF_S = 5.0
PRUNE_INTERVAL_S = 30.0
PRUNE_LIMIT = 10_000
STALL_S = 10.0  # a batch write this old means the database hangs
Pair = tuple[Message, InteractionEvent]


class _Refused(Exception):
    """The store refused (some of) the events' data; ``reason`` is its message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class _Outcome:
    applied: list[AppliedBatch]
    refused: list[tuple[Message, str]]

    def __add__(self, other: _Outcome) -> _Outcome:
        return _Outcome(self.applied + other.applied, self.refused + other.refused)


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
        self.refused = 0  # of the dead-lettered: events the store refused
        self.pruned = 0
        self.prune_interval_s = PRUNE_INTERVAL_S
        self.window = event_time_window(settings)
        self.stuck_since: float | None = None  # monotonic start of the current store outage
        self._writing_since: float | None = None  # monotonic start of the write in flight
        self._next_prune = 0.0

    @property
    def stuck(self) -> bool:
        """Ingest is retrying a store outage, or one write has hung for ``STALL_S`` (a hung
        database raises nothing): readiness turns false."""
        if self.stuck_since is not None:
            return True
        writing = self._writing_since
        return writing is not None and time.monotonic() - writing > STALL_S

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
                batch = decode_batch(messages, self.window)
                links = [_producer_link(m) for m, _ in batch.events[:_MAX_LINKS]]
                with _tracer.start_as_current_span(
                    "feature.ingest",
                    kind=SpanKind.CONSUMER,
                    links=[link for link in links if link.context.is_valid],
                    attributes={"messaging.batch.message_count": len(messages)},
                ) as span:
                    outcome = await self._apply_isolating(batch.events, stop)
                    if outcome is None:
                        return  # stopping during an outage: the batch is redelivered later
                    applied = sum(a.applied for a in outcome.applied)
                    span.set_attribute("feature.events_applied", applied)
                rejected = batch.malformed + outcome.refused
                if rejected:
                    await self._dead_letter(dead_letters, rejected)
                    self.refused += len(outcome.refused)
                # Offsets only after the transaction committed and the dead letters were
                # acknowledged: the effect is durable.
                if await self._commit(consumer, messages):
                    self.committed_messages += len(messages)
                self.applied_events += applied
                for part in outcome.applied:
                    self.on_applied(part)
                await self._prune_if_due()
        finally:
            await consumer.close()

    async def _dead_letter(
        self, dead_letters: DeadLetters, rejected: list[tuple[Message, str]]
    ) -> None:
        for message, reason in rejected:
            dead_letters.publish(message, reason)
        await asyncio.get_running_loop().run_in_executor(None, dead_letters.flush)
        self.dead_lettered += len(rejected)

    async def _commit(self, consumer: AsyncConsumer, messages: list[Message]) -> bool:
        """Commit past ``messages``; a failed commit (e.g. the group rebalanced while a long
        outage kept us from polling) only means a redelivery, which the event ids absorb."""
        try:
            await consumer.commit(next_offsets(messages))
        except KafkaException as exc:
            log.warning("offset commit failed, the batch will be redelivered: %s", exc)
            return False
        return True

    async def _apply_isolating(self, pairs: list[Pair], stop: asyncio.Event) -> _Outcome | None:
        """Apply ``pairs``; when the store refuses their data, bisect until each refused event
        stands alone (the rest is applied). ``None``: stopped during an outage."""
        if not pairs:
            return _Outcome([], [])
        try:
            applied = await self._apply_until_done(pairs, stop)
        except _Refused as refused:
            if len(pairs) == 1:
                log.warning("feature store refused an event: %s", refused.reason)
                return _Outcome([], [(pairs[0][0], refused.reason)])
            middle = len(pairs) // 2
            first = await self._apply_isolating(pairs[:middle], stop)
            rest = None if first is None else await self._apply_isolating(pairs[middle:], stop)
            return None if first is None or rest is None else first + rest
        return None if applied is None else _Outcome([applied], [])

    async def _apply_until_done(
        self, pairs: list[Pair], stop: asyncio.Event
    ) -> AppliedBatch | None:
        """Apply, retrying outages with backoff; raises ``_Refused`` on a data error."""
        events = [event for _, event in pairs]
        # No event counts as later than the batch's newest record (see FeatureStore.apply).
        record_times = [t for message, _ in pairs if (t := record_time_ms(message)) is not None]
        not_after_ms = max(record_times) if record_times else None
        backoff = 0.1
        while True:
            self._writing_since = time.monotonic()
            try:
                applied = await self.store.apply(events, not_after_ms=not_after_ms)
                self.stuck_since = None
                return applied
            except STORE_ERRORS as exc:
                if is_data_error(exc):
                    raise _Refused(_refusal(exc)) from exc
                if self.stuck_since is None:
                    self.stuck_since = time.monotonic()
                log.warning("feature store write failed, retrying: %s", type(exc).__name__)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                    return None
                except TimeoutError:
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
            finally:
                self._writing_since = None

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


def _refusal(exc: BaseException) -> str:
    """The dead-letter reason for a refused event: the database's own first line."""
    cause = getattr(exc, "orig", None) or exc
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"feature store refused the event: {type(cause).__name__}: {detail}"[:500]


def _producer_link(message: Message) -> Link:
    """A link to the producer's span (from the message's ``traceparent`` header)."""
    headers = message.headers()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return Link(trace.get_current_span(context_from_headers(pairs)).get_span_context())
