"""Kill -9 the trainer at random points while a stream arrives: no event trained twice, none lost.

The trainer runs as a real subprocess against the real broker and keeps a debug ledger of the
event ids it trained on inside its checkpoint. After several SIGKILLs and restarts, and a final
graceful stop, the ledger in the surviving checkpoint must be exactly the produced events: each
once, in per-user (per-partition) order.
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
from freshrank.trainer.checkpoint import Checkpoint, CheckpointStore

pytestmark = pytest.mark.integration
EVENTS = 2000
RATE = 50.0  # events/s: the stream is still arriving while the trainer is killed
KILLS = 3


def _produce_slowly(broker: EmbeddedBroker, topic: str, events: list[InteractionEvent]) -> None:
    producer = EventProducer(broker.bootstrap, topic)
    start = time.monotonic()
    for index, event in enumerate(events):
        ahead = index / RATE - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        producer.send(event)
        if index % 700 == 0:
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


def _load(store: CheckpointStore) -> Checkpoint | None:
    try:
        return store.load()
    except FileNotFoundError:
        return None


def _wait_for_progress(
    store: CheckpointStore, since: float, proc: subprocess.Popen[bytes], producing: threading.Thread
) -> bool:
    """Until the restarted trainer has written a checkpoint of its own (False: stream ended)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "trainer exited on its own"
        if store.path.exists() and store.path.stat().st_mtime > since:
            return True
        if not producing.is_alive():
            return False
        time.sleep(0.05)
    raise TimeoutError("trainer made no progress")


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
    producer = threading.Thread(
        target=_produce_slowly, args=(broker, settings.events_topic, events)
    )
    producer.start()
    store = CheckpointStore(Path(settings.checkpoint_dir))
    log = tmp_path / "trainer.log"
    chooser = random.Random(20261123)
    kills: list[int] = []
    try:
        for _ in range(KILLS):
            started = time.time()
            proc = _start(env, log)
            if not _wait_for_progress(store, started, proc, producer):
                break  # the machine is slow today: the stream ended before this kill
            time.sleep(chooser.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            checkpoint = _load(store)
            kills.append(len(checkpoint.ledger or []) if checkpoint else 0)
        producer.join()
        if proc.poll() is not None:
            proc = _start(env, log)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            checkpoint = _load(store)
            if checkpoint is not None and len(checkpoint.ledger or []) >= EVENTS:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        producer.join()
        if proc.poll() is None:
            proc.kill()

    checkpoint = store.load()
    assert checkpoint is not None
    ledger = checkpoint.ledger or []
    assert len(kills) >= 2, kills
    assert kills == sorted(kills), kills
    assert kills[0] > 0, kills
    assert kills[-1] < EVENTS, kills
    assert len(ledger) == len(set(ledger)), "an event was trained twice"
    assert set(ledger) == {e.event_id for e in events}, "an event was skipped"
    assert checkpoint.learner["events_trained"] == EVENTS
    # Per user (one key -> one partition) the training order is the produced order.
    produced: dict[str, list[str]] = defaultdict(list)
    trained: dict[str, list[str]] = defaultdict(list)
    by_id = {e.event_id: e for e in events}
    for event in events:
        produced[event.user_id].append(event.event_id)
    for event_id in ledger:
        trained[by_id[event_id].user_id].append(event_id)
    assert trained == produced
    assert sum(checkpoint.offsets.values()) == EVENTS + len(range(0, EVENTS, 700))
