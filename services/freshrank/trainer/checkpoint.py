"""The trainer checkpoint: learner state and consumed offsets, saved together atomically.

The same file carries the de-duplication window (``DedupeWindow``), so event ids trained
before a crash are still recognised after it.

The learner state (model, optimizers, ID maps, histories, replay buffer, RNG) and the Kafka
offsets it corresponds to live in one file, so a restart resumes exactly where the durable
state ends: events after the offsets are trained again on the state that never saw them,
events before are never seen again. The file is written to a temporary name, fsynced and
renamed over the previous one (then the directory is fsynced), so a kill at any moment leaves
either the old or the new checkpoint, never a torn one. Kafka commits happen only after
``save`` returns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "CheckpointStore", "Offsets"]

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "trainer.ckpt"
FORMAT_VERSION = 1

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to consume


@dataclasses.dataclass(kw_only=True)
class Checkpoint:
    learner: dict[str, Any]
    offsets: Offsets
    newest_ingest_ms: int = 0  # Kafka timestamp of the newest message trained on
    ledger: list[str] | None = None  # every trained event id, in order (debug/tests only)
    dedupe: bytes = b""  # DedupeWindow.state(): digests of the last event ids trained on
    saved_at_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "learner": self.learner,
            "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
            "newest_ingest_ms": self.newest_ingest_ms,
            "ledger": self.ledger,
            "dedupe": self.dedupe,
            "saved_at_ms": self.saved_at_ms,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Checkpoint:
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown checkpoint format {payload.get('format')!r}")
        return cls(
            learner=payload["learner"],
            offsets={(str(t), int(p)): int(o) for t, p, o in payload["offsets"]},
            newest_ingest_ms=int(payload["newest_ingest_ms"]),
            ledger=payload["ledger"],
            dedupe=bytes(payload.get("dedupe", b"")),  # absent in checkpoints before it existed
            saved_at_ms=int(payload["saved_at_ms"]),
        )


class CheckpointStore:
    """One checkpoint file in ``directory``; ``save`` is atomic and durable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / CHECKPOINT_FILE

    def load(self) -> Checkpoint | None:
        if not self.path.exists():
            return None
        # Our own file with numpy arrays and plain objects inside, hence weights_only=False.
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        checkpoint = Checkpoint.from_payload(payload)
        log.info(
            "checkpoint loaded",
            extra={"path": str(self.path), "partitions": len(checkpoint.offsets)},
        )
        return checkpoint

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed writer left (call at start, before any save).

        Named by pid, and in a container the pid repeats, so nothing else would ever
        overwrite or remove them: each would keep a whole checkpoint's worth of disk.
        """
        removed = sorted(self.directory.glob(f".{CHECKPOINT_FILE}.tmp-*"))
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            log.info("removed stale checkpoint temporaries", extra={"files": len(removed)})
        return removed

    def save(self, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{CHECKPOINT_FILE}.tmp-{os.getpid()}"
        with tmp.open("wb") as handle:
            torch.save(checkpoint.to_payload(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
