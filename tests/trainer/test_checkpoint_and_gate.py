"""Checkpoint atomicity/round trip and the quality gate's rules (no broker needed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from trainer_support import SMALL_MODEL

from freshrank.trainer.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointStore
from freshrank.trainer.gate import QualityGate
from freshrank.trainer.learning import build_learner
from freshrank.trainer.loop import TrainerLoop
from freshrank.trainer.metrics import TrainerMetrics
from freshrank.trainer.settings import TrainerSettings


def _checkpoint(offset: int) -> Checkpoint:
    return Checkpoint(
        learner={"weights": torch.arange(4.0) * offset, "rows": np.arange(3)},
        offsets={("t.events", 0): offset, ("t.events", 1): offset + 1},
        newest_ingest_ms=1000 + offset,
        ledger=[f"e{i}" for i in range(offset)],
    )


def test_round_trip_keeps_state_offsets_and_ledger(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.load() is None
    store.save(_checkpoint(5))
    loaded = store.load()
    assert loaded is not None
    assert loaded.offsets == {("t.events", 0): 5, ("t.events", 1): 6}
    assert torch.equal(loaded.learner["weights"], torch.arange(4.0) * 5)
    assert loaded.newest_ingest_ms == 1005
    assert loaded.ledger == ["e0", "e1", "e2", "e3", "e4"]


def test_torn_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_checkpoint(5))
    # A writer killed mid-save leaves only its temporary file behind.
    (tmp_path / f".{CHECKPOINT_FILE}.tmp-999").write_bytes(b"half a checkpoint")
    loaded = store.load()
    assert loaded is not None
    assert loaded.offsets[("t.events", 0)] == 5
    store.save(_checkpoint(9))
    loaded = store.load()
    assert loaded is not None
    assert loaded.offsets[("t.events", 0)] == 9


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    torch.save({"format": 99}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        CheckpointStore(tmp_path).load()


def test_gate_min_events_and_floor() -> None:
    gate = QualityGate("ndcg@10", min_events=100, floor=0.2)
    assert gate.verdict(50, 0.9).outcome == "skipped_min_events"
    refused = gate.verdict(500, 0.1)
    assert (refused.ok, refused.outcome) == (False, "skipped_quality")
    assert gate.verdict(500, 0.3).ok


def test_gate_compares_candidate_with_served_version_on_the_same_stream() -> None:
    gate = QualityGate("hr@10", max_regression=0.05, min_compared=100)
    gate.observe(candidate=0.30, candidate_events=64, served=0.50, served_events=64)
    assert gate.verdict(1000, 0.3).ok, "too few events compared: no verdict yet"
    gate.observe(candidate=0.30, candidate_events=64, served=0.50, served_events=64)
    refused = gate.verdict(1000, 0.3)
    assert (refused.ok, refused.outcome) == (False, "skipped_quality")
    assert "trails served" in refused.detail
    gate.reset()
    # Drift: both fall, the candidate falls less -> export.
    gate.observe(candidate=0.20, candidate_events=128, served=0.10, served_events=128)
    assert gate.verdict(1000, 0.2).ok


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_checkpoint(3))
    for pid in (1, 7, 12345):  # in a container the pid repeats: nothing else would remove them
        (tmp_path / f".{CHECKPOINT_FILE}.tmp-{pid}").write_bytes(b"x" * 1000)
    removed = store.remove_stale_temporaries()
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    loaded = store.load()
    assert loaded is not None
    assert loaded.offsets[("t.events", 0)] == 3


def test_dedupe_window_is_part_of_the_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint = _checkpoint(2)
    checkpoint.dedupe = b"\x01" * 32
    store.save(checkpoint)
    loaded = store.load()
    assert loaded is not None
    assert loaded.dedupe == b"\x01" * 32


def test_checkpoint_cadence_stretches_with_the_cost_of_a_checkpoint(tmp_path: Path) -> None:
    """A big state is written proportionally less often: at most ``checkpoint_time_share``
    of the time goes to checkpoints (0.1: a 3 s checkpoint at most every 30 s)."""
    settings = TrainerSettings(
        checkpoint_dir=str(tmp_path),
        checkpoint_interval_s=1.0,
        checkpoint_time_share=0.1,
        device="cpu",
        **SMALL_MODEL,
    )
    loop = TrainerLoop(
        settings,
        build_learner(settings),
        CheckpointStore(tmp_path),
        TrainerMetrics(CollectorRegistry()),
    )
    now = time.monotonic()
    loop._last_checkpoint = now - 2.0
    loop._checkpoint_cost_s = 0.01  # small state: the configured interval rules
    assert loop._checkpoint_due()
    loop._checkpoint_cost_s = 3.0  # large state: every 30 s, not every second
    assert not loop._checkpoint_due()
    loop._last_checkpoint = now - 31.0
    assert loop._checkpoint_due()
