"""The training loop: consume -> decode -> test-then-train -> checkpoint -> commit.

Malformed messages (the event contract of ``freshrank.core.codec``, the same verdict every
consumer reaches) are skipped and counted; the feature ingester is the one that dead-letters
them, so each lands on the dead-letter topic once.

Exactly-once effect. The learner's state and the offsets of everything it has trained on are
saved together (``CheckpointStore``); Kafka commits follow a durable checkpoint and are only a
hint for other tools. At startup the checkpoint is loaded, and whenever partitions are
assigned the consumer is positioned from the loop's own offsets (``position``: the checkpoint's,
plus every batch handled since), never from Kafka's committed offsets. After a crash the
learner restarts from the checkpoint and re-reads exactly the events the checkpoint has not
seen: none is trained twice into the surviving state, none is skipped.

Concurrency. Three threads do blocking work: the Kafka consumer thread (poll, commit), the
training thread (every learner call, so the model is never read while it is being changed)
and the exporter's I/O thread. The next poll runs while the current batch trains; ``position``
only changes between two polls, so the assignment callback (on the consumer thread, inside a
poll) reads a value consistent with the learner.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import (
    AsyncConsumer,
    decode_batch,
    event_time_window,
    next_offsets,
    security_config,
)
from freshrank.core.telemetry import context_from_headers
from freshrank.trainer.checkpoint import Checkpoint, CheckpointStore, Offsets
from freshrank.trainer.dedupe import DedupeWindow
from freshrank.trainer.exporter import Exporter, ExportFailed, StagedExport
from freshrank.trainer.gate import QualityGate
from freshrank.trainer.learning import Learner, metric_of
from freshrank.trainer.metrics import TrainerMetrics
from freshrank.trainer.settings import TrainerSettings

__all__ = ["BatchOutcome", "TrainerLoop"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("freshrank.trainer")
_TIMESTAMP_NOT_AVAILABLE = 0
_EXPORT_DRAIN_S = 30.0


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    trained: int
    dead_lettered: int
    seconds: float


class TrainerLoop:
    """One trainer: owns the learner, its checkpoint, the consumer and the export cadence."""

    def __init__(
        self,
        settings: TrainerSettings,
        learner: Learner,
        store: CheckpointStore,
        metrics: TrainerMetrics,
        *,
        exporter: Exporter | None = None,
        shadow_factory: Callable[[], Learner] | None = None,
    ) -> None:
        self.settings = settings
        self.learner = learner
        self.store = store
        self.metrics = metrics
        self.exporter = exporter
        self.gate = QualityGate(
            settings.quality_metric,
            min_events=settings.min_events,
            floor=settings.quality_floor,
            max_regression=settings.max_regression,
        )
        self._shadow_factory = shadow_factory if self.gate.compares_served else None
        self._shadow: Learner | None = None  # frozen copy of the served version
        self.position: Offsets = {}
        self.newest_ingest_ms = 0
        self.ledger: list[str] | None = [] if settings.debug_ledger else None
        self.dedupe = DedupeWindow(settings.dedupe_window)
        self.assigned = False
        self.batches = 0
        self._train = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train")
        self._saved_position: Offsets = {}
        self._last_checkpoint = time.monotonic()
        self._checkpoint_cost_s = 0.0  # how long the last checkpoint took to write
        self._last_export = time.monotonic()
        self._events_at_export = 0
        self._publishing: asyncio.Task[None] | None = None
        self._consumer: AsyncConsumer | None = None
        self._window = event_time_window(settings)

    # -- lifecycle -----------------------------------------------------------------------

    async def restore(self) -> None:
        """Clean up after a crash, then load the checkpoint (if any): learner state, offsets,
        de-duplication window, ledger."""
        await self._in_train(self._remove_leftovers)
        checkpoint = await self._in_train(self.store.load)
        if checkpoint is None:
            log.info("no checkpoint: starting from a fresh model at the earliest offsets")
            return
        await self._in_train(self.learner.load_state_dict, checkpoint.learner)
        self.position = dict(checkpoint.offsets)
        self._saved_position = dict(checkpoint.offsets)
        self.newest_ingest_ms = checkpoint.newest_ingest_ms
        self.dedupe.load(checkpoint.dedupe)
        if self.settings.debug_ledger:
            self.ledger = list(checkpoint.ledger or [])
        self._events_at_export = self.learner.events_trained
        self.metrics.set_rolling(self.learner.rolling)

    def _remove_leftovers(self) -> None:
        """What a killed trainer left: checkpoint temporaries, export staging, half-written
        versions. Nothing else removes them, and every crash would add more."""
        self.store.remove_stale_temporaries()
        shutil.rmtree(self._staging_root(), ignore_errors=True)
        if self.exporter is not None:
            # First: a repository of an older trainer is read and rewritten in today's form.
            self.exporter.repository.upgrade()
            self.exporter.repository.remove_stale_temporaries()

    def _staging_root(self) -> Path:
        return Path(self.settings.checkpoint_dir) / "staging"

    async def run(self, stop: asyncio.Event) -> None:
        """Train until ``stop`` is set; then finish the batch, checkpoint, commit and close."""
        settings = self.settings
        security = security_config(settings)
        consumer = AsyncConsumer(
            settings.bootstrap_servers, settings.group, [settings.events_topic], **security
        )
        # Re-subscribe with our rebalance hook before the first poll (nothing runs yet).
        consumer.raw.subscribe(
            [settings.events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._consumer = consumer
        try:
            await self._consume(consumer, stop)
            await self._drain_export()
            await self.checkpoint()
        finally:
            await consumer.close()
            self._train.shutdown(wait=True)

    async def _consume(self, consumer: AsyncConsumer, stop: asyncio.Event) -> None:
        poll = self._poll(consumer)
        while True:
            messages = await poll
            if stop.is_set():
                # Polled but not handled: not in ``position``, so re-read after a restart.
                return
            self.position.update(_offsets(next_offsets(messages)))
            poll = self._poll(consumer)  # prefetch the next batch while this one trains
            if messages:
                await self.handle(messages)
            if self._checkpoint_due():
                await self.checkpoint()
            await self._maybe_export()

    def _poll(self, consumer: AsyncConsumer) -> asyncio.Future[list[Message]]:
        settings = self.settings
        return asyncio.ensure_future(
            consumer.poll_batch(settings.batch_size, settings.poll_timeout_s)
        )

    # -- rebalance (runs on the consumer thread, inside poll) -----------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for partition in partitions:
            offset = self.position.get((partition.topic, partition.partition))
            partition.offset = OFFSET_BEGINNING if offset is None else offset
        consumer.assign(partitions)
        self.assigned = True
        log.info(
            "partitions assigned at checkpoint offsets",
            extra={"offsets": {f"{p.topic}:{p.partition}": p.offset for p in partitions}},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = False
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    # -- one batch -----------------------------------------------------------------------

    async def handle(self, messages: Sequence[Message]) -> BatchOutcome:
        """Skip the malformed messages (the feature ingester dead-letters them), test-then-train
        on the rest."""
        start = time.perf_counter()
        decoded = decode_batch(messages, self._window)
        self.metrics.events_dead_lettered.inc(len(decoded.malformed))
        events = [event for _, event in decoded.events]
        if events:
            links = _links(message for message, _ in decoded.events)
            with tracer.start_as_current_span(
                "train_batch",
                links=links,
                attributes={
                    "freshrank.events": len(events),
                    "freshrank.dead_lettered": len(decoded.malformed),
                },
            ):
                step, served, duplicates = await self._in_train(self._train_step, events)
            self.metrics.events_duplicate.inc(duplicates)
            self._after_step(step, served, [message for message, _ in decoded.events])
        seconds = time.perf_counter() - start
        self.metrics.batch_seconds.observe(seconds)
        self.batches += 1
        return BatchOutcome(len(events), len(decoded.malformed), seconds)

    def _train_step(self, events: list[InteractionEvent]) -> tuple[Any, Any, int]:
        """Training thread: drop event ids already trained on, score a sample on the served
        copy, then test-then-train. (step, served, duplicates); step is None when every
        event was a duplicate."""
        events, duplicates = self.dedupe.fresh(events)
        if not events:
            return None, None, duplicates
        served = None
        if self._shadow is not None:
            served = self._shadow.evaluate_only(events[: self.settings.gate_sample])
        step = self.learner.step(events)
        if self.ledger is not None:
            self.ledger.extend(event.event_id for event in events)
        return step, served, duplicates

    def _after_step(self, step: Any, served: Any, messages: list[Message]) -> None:
        if step is not None:
            self._after_training(step, served)
        for message in messages:
            kind, timestamp = message.timestamp()
            if kind != _TIMESTAMP_NOT_AVAILABLE and timestamp > self.newest_ingest_ms:
                self.newest_ingest_ms = timestamp

    def _after_training(self, step: Any, served: Any) -> None:
        self.metrics.events_trained.inc(int(step.events))
        self.metrics.set_rolling(self.learner.rolling)
        self.metrics.set_model_stats(self.learner.model_stats())
        if served is not None:
            metric = self.settings.quality_metric
            self.gate.observe(
                metric_of(step, metric), int(step.events), metric_of(served, metric), served.events
            )

    # -- checkpoint ----------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        """Every ``checkpoint_interval_s``, but never more often than keeps checkpoint writing
        under ``checkpoint_time_share`` of the time: a large state (a 100 MB checkpoint takes
        seconds) is written proportionally less often. Only the replay after a crash grows;
        exactly-once does not depend on the cadence."""
        elapsed = time.monotonic() - self._last_checkpoint
        settings = self.settings
        interval = max(
            settings.checkpoint_interval_s, self._checkpoint_cost_s / settings.checkpoint_time_share
        )
        return elapsed >= interval

    async def checkpoint(self) -> None:
        """Checkpoint durable -> offsets committed, in that order."""
        self._last_checkpoint = time.monotonic()
        if self.position == self._saved_position:
            return
        offsets, ingest = dict(self.position), self.newest_ingest_ms
        start = time.perf_counter()
        await self._in_train(self._save, offsets, ingest)
        self._checkpoint_cost_s = time.perf_counter() - start
        self.metrics.checkpoint_seconds.observe(self._checkpoint_cost_s)
        self.metrics.checkpoints.inc()
        self.metrics.set_ids(self.learner.id_stats())
        self._saved_position = offsets
        await self._commit(offsets)

    def _save(self, offsets: Offsets, newest_ingest_ms: int) -> None:
        ledger = list(self.ledger) if self.ledger is not None else None
        checkpoint = Checkpoint(
            learner=self.learner.state_dict(),
            offsets=offsets,
            newest_ingest_ms=newest_ingest_ms,
            ledger=ledger,
            dedupe=self.dedupe.state(),
        )
        self.store.save(checkpoint)

    async def _commit(self, offsets: Offsets) -> None:
        if self._consumer is None:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            await self._consumer.commit(partitions)
        except KafkaException as exc:  # e.g. mid-rebalance: the checkpoint still holds them
            log.warning("offset commit failed (checkpoint is the source of truth): %s", exc)

    # -- export --------------------------------------------------------------------------

    def _export_due(self) -> bool:
        if self.exporter is None or (self._publishing and not self._publishing.done()):
            return False
        new_events = self.learner.events_trained - self._events_at_export
        if new_events <= 0:
            return False
        every = self.settings.export_every_events
        elapsed = time.monotonic() - self._last_export
        return elapsed >= self.settings.export_interval_s or (every > 0 and new_events >= every)

    async def _maybe_export(self) -> None:
        if not self._export_due():
            return
        self._last_export = time.monotonic()
        metric = self.settings.quality_metric
        verdict = self.gate.verdict(
            self.learner.events_trained, self.learner.rolling.get(metric, 0.0)
        )
        if not verdict.ok:
            self.metrics.exports.labels(outcome=verdict.outcome).inc()
            log.warning("export skipped by the quality gate: %s", verdict.detail)
            return
        # The exported state must never be ahead of the durable one.
        await self.checkpoint()
        staged, served_state = await self._in_train(self._stage)
        self._events_at_export = staged.events_covered
        self._publishing = asyncio.ensure_future(self._publish(staged, served_state))

    def _stage(self) -> tuple[StagedExport, dict[str, Any] | None]:
        """Training thread: write model.pt, export.json and the ID tables, and describe them."""
        directory = self._staging_root() / uuid.uuid4().hex
        directory.mkdir(parents=True)
        self.learner.export(directory)
        staged = StagedExport(
            directory=directory,
            events_covered=self.learner.events_trained,
            last_event_timestamp_ms=self.learner.last_event_timestamp_ms,
            newest_ingest_ms=self.newest_ingest_ms,
            # NaN (e.g. no full-catalogue events yet) would make the manifest invalid JSON.
            metrics={k: v for k, v in self.learner.rolling.items() if math.isfinite(v)},
            offsets={f"{t}:{p}": o for (t, p), o in sorted(self.position.items())},
            id_stats=self.learner.id_stats(),
        )
        served_state = None
        if self._shadow_factory is not None:
            served_state = copy.deepcopy(self.learner.state_dict())
        return staged, served_state

    async def _publish(self, staged: StagedExport, served_state: dict[str, Any] | None) -> None:
        assert self.exporter is not None
        try:
            await self.exporter.publish(staged)
        except ExportFailed as exc:
            log.error("export failed: %s", exc)
            return
        finally:
            shutil.rmtree(staged.directory, ignore_errors=True)
        if served_state is not None:
            await self._in_train(self._serve_copy, served_state)
        self.gate.reset()

    def _serve_copy(self, state: dict[str, Any]) -> None:
        if self._shadow is None:
            assert self._shadow_factory is not None
            self._shadow = self._shadow_factory()
        self._shadow.load_state_dict(state)

    async def _drain_export(self) -> None:
        if self._publishing is not None and not self._publishing.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._publishing), _EXPORT_DRAIN_S)

    async def _in_train(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._train, fn, *args)


def _offsets(partitions: Sequence[TopicPartition]) -> Offsets:
    return {(p.topic, p.partition): p.offset for p in partitions}


def _links(messages: Any) -> list[Link]:
    """One span link per distinct producer trace context."""
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for message in messages:
        context = trace.get_current_span(context_from_headers(message.headers())).get_span_context()
        key = (context.trace_id, context.span_id)
        if context.is_valid and key not in seen:
            seen.add(key)
            links.append(Link(context))
    return links
