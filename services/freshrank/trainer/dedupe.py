"""The trainer's de-duplication window: an event id trained once is not trained again.

Producer retries (librdkafka re-sending a batch whose acknowledgement was lost) can write the
same event at two offsets. Offsets make the trainer exactly once per *offset*; this window
makes it exactly once per *event id* for duplicates that arrive within the last ``capacity``
distinct events. It is part of the checkpoint (saved and restored with the learner and the
offsets), so a kill -9 between the two copies does not let the second one through.

Bounded by count, not time: ids are kept as 16-byte BLAKE2b digests (an id's own length does
not matter), in arrival order; the oldest digest is forgotten when the window is full.
Memory: ~100 bytes per entry in Python (digest object + set and deque slots), 16 bytes per
entry in the checkpoint.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable

from freshrank.core.codec import InteractionEvent

__all__ = ["DIGEST_BYTES", "DedupeWindow"]

DIGEST_BYTES = 16


def _digest(event_id: str) -> bytes:
    # surrogatepass: an id is whatever the codec accepted; the digest must never raise.
    data = event_id.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


class DedupeWindow:
    """The digests of the last ``capacity`` distinct event ids trained on (0: disabled)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._order: deque[bytes] = deque()
        self._seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._order)

    def fresh(self, events: Iterable[InteractionEvent]) -> tuple[list[InteractionEvent], int]:
        """The events not seen before (also within ``events``), now remembered; and how many
        were dropped as duplicates."""
        if self.capacity == 0:
            kept = list(events)
            return kept, 0
        kept, duplicates = [], 0
        for event in events:
            digest = _digest(event.event_id)
            if digest in self._seen:
                duplicates += 1
                continue
            self._remember(digest)
            kept.append(event)
        return kept, duplicates

    def _remember(self, digest: bytes) -> None:
        if len(self._order) >= self.capacity:
            self._seen.discard(self._order.popleft())
        self._order.append(digest)
        self._seen.add(digest)

    def state(self) -> bytes:
        """The digests, oldest first, concatenated (what the checkpoint stores)."""
        return b"".join(self._order)

    def load(self, state: bytes) -> None:
        """Replace the window with a saved one (the newest ``capacity`` digests of it)."""
        if len(state) % DIGEST_BYTES:
            raise ValueError("de-duplication state is not a whole number of digests")
        self._order.clear()
        self._seen.clear()
        if self.capacity == 0:
            return
        digests = [state[i : i + DIGEST_BYTES] for i in range(0, len(state), DIGEST_BYTES)]
        for digest in digests[-self.capacity :]:
            self._remember(digest)
