"""Exactly once per event id: duplicates at other offsets (producer retries) are not trained.

The window is unit-checked (bound, order, state) and then proven on the real broker with the
trainer service in-process: the same event produced at two offsets is trained once, also when
the second copy arrives after a restart (the window is part of the checkpoint). The kill -9
case is in test_exactly_once (its stream carries duplicates across the kills).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from trainer_support import produce, small_settings

from freshrank.core.codec import EventType, InteractionEvent, make_event
from freshrank.embedded import EmbeddedBroker
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.checkpoint import CheckpointStore
from freshrank.trainer.dedupe import DIGEST_BYTES, DedupeWindow
from freshrank.trainer.service import run_service
from freshrank.trainer.settings import TrainerSettings


def _event(event_id: str) -> InteractionEvent:
    return make_event(
        event_id=event_id,
        user_id="u1",
        item_id="i1",
        type=EventType.CLICK,
        timestamp_ms=1_700_000_000_000,
    )


def test_window_drops_repeats_within_and_across_batches_and_forgets_the_oldest() -> None:
    window = DedupeWindow(3)
    kept, duplicates = window.fresh([_event("a"), _event("b"), _event("a")])
    assert [e.event_id for e in kept] == ["a", "b"]
    assert duplicates == 1
    kept, duplicates = window.fresh([_event("b"), _event("c"), _event("d")])
    assert [e.event_id for e in kept] == ["c", "d"]
    assert duplicates == 1
    assert len(window) == 3  # bounded: "a" was forgotten when "d" arrived
    kept, _ = window.fresh([_event("a")])
    assert [e.event_id for e in kept] == ["a"]


def test_window_state_round_trips_and_is_bounded_by_count_not_id_length() -> None:
    window = DedupeWindow(100)
    # Built directly: make_event would refuse an id the input contract refuses.
    huge = InteractionEvent(event_id="x" * 200_000, user_id="u1", item_id="i1")
    window.fresh([huge, *(_event(f"e{i}") for i in range(150))])
    state = window.state()
    assert len(state) == 100 * DIGEST_BYTES  # 200 KB ids cost 16 bytes each
    restored = DedupeWindow(10)
    restored.load(state)  # a smaller window keeps the newest
    assert len(restored) == 10
    kept, duplicates = restored.fresh([_event("e149"), _event("e139")])
    assert [e.event_id for e in kept] == ["e139"]
    assert duplicates == 1
    with pytest.raises(ValueError, match="whole number"):
        restored.load(b"\x00" * 5)


def test_disabled_window_keeps_everything() -> None:
    kept, duplicates = DedupeWindow(0).fresh([_event("a"), _event("a")])
    assert len(kept) == 2
    assert duplicates == 0


async def _train_until(settings: TrainerSettings, offsets: int) -> CollectorRegistry:
    """Run the trainer service until its checkpoint covers ``offsets`` messages; stop it."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    store = CheckpointStore(Path(settings.checkpoint_dir))
    try:
        deadline = asyncio.get_running_loop().time() + 180
        while asyncio.get_running_loop().time() < deadline:
            assert not service.done(), service
            checkpoint = await asyncio.to_thread(store.load) if store.path.exists() else None
            if checkpoint is not None and sum(checkpoint.offsets.values()) >= offsets:
                break
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"checkpoint never covered {offsets} messages")
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)
    return registry


@pytest.mark.integration
async def test_same_event_at_two_offsets_is_trained_once_also_after_a_restart(
    broker: EmbeddedBroker, unique_name: str, tmp_path: Path
) -> None:
    settings = small_settings(broker, unique_name, tmp_path, port=0, debug_ledger=True)
    events = list(SyntheticStream(SyntheticConfig(users=30, items=30, events=300)).events())
    first = events[:200]
    # Producer retries: the same events written again at later offsets.
    repeats = [*first[:20], first[150]]
    produced = produce(broker, settings.events_topic, first + repeats)

    registry = await _train_until(settings, produced)
    sample = registry.get_sample_value
    assert sample("freshrank_trainer_events_trained_total") == len(first)
    assert sample("freshrank_trainer_events_duplicate_total") == len(repeats)

    # What a kill -9 leaves (the pid repeats in a container) is removed at the next start.
    leftovers = [
        Path(settings.checkpoint_dir) / ".trainer.ckpt.tmp-1",
        Path(settings.checkpoint_dir) / "staging" / "0123abcd" / "model.pt",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a crash")

    # After a restart, copies of events trained before it are still recognised.
    later = first[:50] + events[200:]
    produced += produce(broker, settings.events_topic, later)
    registry = await _train_until(settings, produced)
    sample = registry.get_sample_value
    assert sample("freshrank_trainer_events_trained_total") == len(events) - len(first)
    assert sample("freshrank_trainer_events_duplicate_total") == 50

    assert not any(path.exists() for path in leftovers)
    checkpoint = CheckpointStore(Path(settings.checkpoint_dir)).load()
    assert checkpoint is not None
    ledger = checkpoint.ledger or []
    assert sorted(ledger) == sorted(e.event_id for e in events)
    assert checkpoint.learner["events_trained"] == len(events)
