"""Collisionless string-ID -> embedding-row maps, shared by trainer and serving.

Every active ID owns its row (no hashing, so no silent merges: Monolith's bar). Row 0 is
reserved for padding and unknown IDs, the cold-start path at serving time. When the table is
full the least recently seen IDs are evicted in a small batch and their rows handed back to
the trainer to re-initialise; evictions are counted and exported, never silent.

Bounded: an ID longer than ``MAX_ID_BYTES`` (UTF-8) is never stored; it maps to row 0 like an
unknown ID and is counted in ``oversized``. The input contract rejects such events before they
reach a learner; this keeps one that slips through from living in the map and in every
exported ``ids.json`` forever.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_ID_BYTES", "PADDING_ROW", "IdMap"]

PADDING_ROW = 0
MAX_ID_BYTES = 256
_EVICT_FRACTION = 0.01  # evict 1% at once so a full table does not scan per new ID


class IdMap:
    """ID -> row for one table of ``capacity`` rows (row 0 reserved)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("capacity must be >= 2 (row 0 is reserved)")
        self.capacity = capacity
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = [None] * capacity
        self._last_seen = np.zeros(capacity, dtype=np.int64)
        self._free: list[int] = list(range(capacity - 1, 0, -1))  # pop() gives 1, 2, ...
        self._clock = 0
        self.evictions = 0
        self.oversized = 0  # new IDs over MAX_ID_BYTES, mapped to row 0 and not stored

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def row(self, item_id: str) -> int:
        """Row of a known ID, else ``PADDING_ROW`` (serving: never inserts)."""
        return self._rows.get(item_id, PADDING_ROW)

    def rows(self, ids: Iterable[str]) -> npt.NDArray[np.int64]:
        get = self._rows.get
        return np.fromiter((get(i, PADDING_ROW) for i in ids), dtype=np.int64)

    def active_rows(self) -> npt.NDArray[np.int64]:
        """Rows owned by an ID, ascending (the catalogue a full ranking scores)."""
        return np.sort(np.fromiter(self._rows.values(), dtype=np.int64, count=len(self._rows)))

    def known_ids(self) -> list[str]:
        """Active IDs in row order."""
        return [i for i in self._ids if i is not None]

    def assign(self, ids: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[int]]:
        """Rows for ``ids``, inserting new ones; returns (rows, evicted rows to re-initialise)."""
        self._clock += 1
        out = np.empty(len(ids), dtype=np.int64)
        evicted: list[int] = []
        for index, item_id in enumerate(ids):
            row = self._rows.get(item_id)
            if row is None and _oversized(item_id):
                self.oversized += 1
                row = PADDING_ROW
            elif row is None:
                if not self._free:
                    evicted.extend(self._evict_oldest(protect=ids))
                row = self._free.pop()
                self._rows[item_id] = row
                self._ids[row] = item_id
            out[index] = row
        self._last_seen[out] = self._clock
        return out, evicted

    def _evict_oldest(self, protect: Sequence[str]) -> list[int]:
        count = max(1, int(self.capacity * _EVICT_FRACTION))
        keep = {self._rows[i] for i in protect if i in self._rows}
        last_seen = self._last_seen.copy()
        last_seen[PADDING_ROW] = np.iinfo(np.int64).max
        if keep:
            last_seen[list(keep)] = np.iinfo(np.int64).max
        victims = [int(r) for r in np.argsort(last_seen, kind="stable")[:count]]
        victims = [r for r in victims if r not in keep and r != PADDING_ROW]
        if not victims:
            raise OverflowError(f"ID table of {self.capacity} rows cannot hold one batch")
        for row in victims:
            old = self._ids[row]
            if old is not None:
                del self._rows[old]
            self._ids[row] = None
            self._last_seen[row] = 0
        self._free.extend(reversed(victims))
        self.evictions += len(victims)
        return victims

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "clock": self._clock,
            "evictions": self.evictions,
            "rows": self._rows,
            "last_seen": {str(r): int(self._last_seen[r]) for r in self._rows.values()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdMap:
        table = cls(int(data["capacity"]))
        table._clock = int(data.get("clock", 0))
        table.evictions = int(data.get("evictions", 0))
        for item_id, row in data["rows"].items():
            table._rows[item_id] = int(row)
            table._ids[int(row)] = item_id
        for row, seen in data.get("last_seen", {}).items():
            table._last_seen[int(row)] = seen
        used = set(table._rows.values())
        table._free = [r for r in range(table.capacity - 1, 0, -1) if r not in used]
        return table

    def state_dict(self) -> dict[str, Any]:
        """``to_json`` plus the free-row order, so a resumed trainer assigns the same rows."""
        return {**self.to_json(), "free": list(self._free)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> IdMap:
        table = cls.from_json(state)
        if "free" in state:
            table._free = [int(r) for r in state["free"]]
        return table

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> IdMap:
        return cls.from_json(json.loads(path.read_text()))


def _oversized(item_id: str) -> bool:
    # Cheap first: at most 4 UTF-8 bytes per character.
    if len(item_id) * 4 <= MAX_ID_BYTES:
        return False
    return len(item_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES
