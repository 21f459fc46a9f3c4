"""Kill -9 the trainer at random points while a stream arrives: no event trained twice, none lost.

The trainer runs as a real subprocess against the real broker and keeps a debug ledger of the
event ids it trained on inside its checkpoint. After several SIGKILLs and restarts, and a final
graceful stop, the ledger in the surviving checkpoint must be exactly the produced events: each
once, in per-user (per-partition) order, although a retrying producer wrote some of them at two
offsets (the de-duplication window is in the checkpoint, so it survives the kills too).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from trainer_support import settings_env, small_settings

from freshrank.core.codec import InteractionEvent
from freshrank.core.kafka import EventProducer, ensure_topics
from freshrank.embedded import EmbeddedBroker
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.checkpoint import CheckpointStore

pytestmark = pytest.mark.integration
EVENTS = 2000
RATE = 50.0  # events/s: the stream is still arriving while the trainer is killed
KILLS = 3
REPEAT_EVERY, REPEAT_AFTER = 97, 40  # producer retries: an event written again 40 later
GARBAGE_EVERY = 700
STALL_S = 180.0  # no progress for this long fails the test (progress, not the clock, decides)


class Gate:
    """How many stream messages the producer may send so far: the test releases the stream
    chunk by chunk, one per trainer run, so a slow machine cannot end the stream before the
    kills (waits follow progress, never a wall-clock budget)."""

    def __init__(self) -> None:
        self._limit = 0
        self._changed = threading.Condition()

    def release(self, limit: int) -> None:
        with self._changed:
            self._limit = max(self._limit, limit)
            self._changed.notify_all()

    def wait_for(self, index: int) -> bool:
        """Block until message ``index`` may be sent; True when that meant waiting."""
        with self._changed:
            if index < self._limit:
                return False
            self._changed.wait_for(lambda: index < self._limit)
            return True


def _with_retries(events: list[InteractionEvent]) -> list[InteractionEvent]:
    """The stream as a retrying producer writes it: some events at two offsets."""
    stream: list[InteractionEvent] = []
    for index, event in enumerate(events):
        stream.append(event)
        if index >= REPEAT_AFTER and (index - REPEAT_AFTER) % REPEAT_EVERY == 0:
            stream.append(events[index - REPEAT_AFTER])
    return stream


def _produce(
    broker: EmbeddedBroker, topic: str, stream: list[InteractionEvent], gate: Gate
) -> None:
    producer = EventProducer(broker.bootstrap, topic)
    start = time.monotonic()
    for index, event in enumerate(stream):
        if gate.wait_for(index):
            start = time.monotonic() - index / RATE  # resume at RATE, no burst
        ahead = index / RATE - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        producer.send(event)
        if index % GARBAGE_EVERY == 0:
            producer.send_raw(b"\xff\xfe not an event", key=event.user_id)
    producer.flush()


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "freshrank.cli", "trainer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _trained(store: CheckpointStore) -> int:
    """Events in the durable ledger (0 before the first checkpoint or mid-replace)."""
    try:
        checkpoint = store.load()
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0
    return len(checkpoint.ledger or []) if checkpoint else 0


def _wait_for_growth(
    store: CheckpointStore, beyond: int, proc: subprocess.Popen[bytes], log: Path
) -> int:
    """Until the checkpoint's ledger holds more than ``beyond`` events; fails on a stall."""
    last_growth, last = time.monotonic(), _trained(store)
    while True:
        assert proc.poll() is None, "trainer exited on its own:\n" + log.read_text()[-3000:]
        trained = _trained(store)
        if trained > beyond:
            return trained
        if trained != last:
            last_growth, last = time.monotonic(), trained
        if time.monotonic() - last_growth > STALL_S:
            raise TimeoutError(f"no progress beyond {beyond} in {STALL_S}s")
        time.sleep(0.1)


def test_sigkill_at_random_points_trains_every_event_exactly_once(
    broker: EmbeddedBroker, unique_name: str, tmp_path: Path
) -> None:
    settings = small_settings(
        broker,
        unique_name,
        tmp_path,
        port=0,
        batch_size=32,
        checkpoint_interval_s=0.2,
        debug_ledger=True,
    )
    env = {**os.environ, **settings_env(settings), "OMP_NUM_THREADS": "1"}
    ensure_topics(broker.bootstrap, [settings.events_topic, settings.dlq_topic], partitions=2)
    config = SyntheticConfig(users=100, items=80, events=EVENTS, seed=3)
    events = list(SyntheticStream(config).events())
    stream = _with_retries(events)
    gate = Gate()
    producer = threading.Thread(
        target=_produce, args=(broker, settings.events_topic, stream, gate), daemon=True
    )
    producer.start()
    store = CheckpointStore(Path(settings.checkpoint_dir))
    log = tmp_path / "trainer.log"
    chooser = random.Random(20261123)
    chunk = len(stream) // (KILLS + 1)
    kills: list[int] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        for round_ in range(KILLS):
            gate.release((round_ + 1) * chunk)  # this run has a stream to train on
            proc = _start(env, log)
            _wait_for_growth(store, kills[-1] if kills else 0, proc, log)
            time.sleep(chooser.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(_trained(store))
        gate.release(len(stream))
        proc = _start(env, log)
        trained = kills[-1]
        while trained < EVENTS:
            trained = _wait_for_growth(store, trained, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        gate.release(len(stream))
        producer.join(120)
        if proc is not None and proc.poll() is None:
            proc.kill()

    checkpoint = store.load()
    assert checkpoint is not None
    ledger = checkpoint.ledger or []
    assert len(kills) == KILLS, kills
    assert kills == sorted(kills), kills
    assert kills[0] > 0, kills
    assert kills[-1] < EVENTS, kills
    assert len(ledger) == len(set(ledger)), "an event was trained twice"
    assert set(ledger) == {e.event_id for e in events}, "an event was skipped"
    assert checkpoint.learner["events_trained"] == EVENTS
    # Per user (one key -> one partition) the training order is the produced order.
    produced: dict[str, list[str]] = defaultdict(list)
    trained_order: dict[str, list[str]] = defaultdict(list)
    by_id = {e.event_id: e for e in events}
    for event in events:
        produced[event.user_id].append(event.event_id)
    for event_id in ledger:
        trained_order[by_id[event_id].user_id].append(event_id)
    assert trained_order == produced
    garbage = len(range(0, len(stream), GARBAGE_EVERY))
    assert len(stream) > EVENTS  # the retries really wrote events twice
    assert sum(checkpoint.offsets.values()) == len(stream) + garbage
