"""Compact, read-only ID -> embedding-row tables of one exported version (``<version>/ids/``).

Why not ``ids.json``: at 100,000 users parsing it into dicts took 350 ms of CPU with the GIL
held, once per version, and stalled the ranking event loop. These tables are plain ``.npy``
arrays written once by the exporter (off the serving path) and memory-mapped by ranking: a new
version costs a few ``open`` calls, no parse and no per-ID Python objects.

Per table ``<name>`` (``users``, ``items``):
- ``<name>.ids.npy``   the active IDs, sorted (numpy unicode, fixed width)
- ``<name>.rows.npy``  int64, the row of each ID, aligned with the sorted IDs
- ``<name>.recent.npy`` int64 indices into the sorted IDs, most recently trained first

Lookups are ``np.searchsorted`` over the sorted IDs; an unknown ID maps to ``PADDING_ROW``
(the cold-start row). (A trailing NUL character is not representable in numpy strings; such
IDs are not looked up correctly, and no event contract allows them.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ID_TABLES_DIR", "PADDING_ROW", "IdTable"]

ID_TABLES_DIR = "ids"
PADDING_ROW = 0


class IdTable:
    """One ID table, sorted for binary search; cheap to open (memory-mapped)."""

    def __init__(
        self,
        ids: npt.NDArray[np.str_],
        rows: npt.NDArray[np.int64],
        recent: npt.NDArray[np.int64],
    ) -> None:
        if ids.shape != rows.shape or recent.shape != ids.shape:
            raise ValueError("ids, rows and recent must have one entry per ID")
        self.ids = ids
        self.rows_of_ids = rows
        self.recent = recent

    @classmethod
    def from_id_map_json(cls, table: dict[str, Any]) -> IdTable:
        """From one map of an export's ``ids.json`` (``IdMap.to_json``: rows, last_seen)."""
        rows = {str(item): int(row) for item, row in table.get("rows", {}).items()}
        last_seen = {int(row): int(seen) for row, seen in table.get("last_seen", {}).items()}
        return cls.build(rows, last_seen)

    @classmethod
    def build(
        cls, rows_by_id: dict[str, int], last_seen_by_row: dict[int, int] | None = None
    ) -> IdTable:
        """From an ID -> row map (and a row -> last-seen clock for the recency order)."""
        ids = np.array(list(rows_by_id), dtype=np.str_)
        rows = np.fromiter(rows_by_id.values(), dtype=np.int64, count=len(rows_by_id))
        order = np.argsort(ids, kind="stable")
        ids, rows = ids[order], rows[order]
        seen_map = last_seen_by_row or {}
        seen = np.fromiter(
            (seen_map.get(int(r), 0) for r in rows), dtype=np.int64, count=rows.shape[0]
        )
        # Most recently seen first; ties by row (the order the trainer assigned them).
        recent = np.lexsort((rows, -seen)).astype(np.int64)
        return cls(ids.astype(np.str_), rows, recent)

    def save(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for suffix, array in (
            ("ids", self.ids),
            ("rows", self.rows_of_ids),
            ("recent", self.recent),
        ):
            np.save(directory / f"{name}.{suffix}.npy", array, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, name: str) -> IdTable:
        def part(suffix: str) -> npt.NDArray[np.generic]:
            path = directory / f"{name}.{suffix}.npy"
            array: npt.NDArray[np.generic] = np.load(path, mmap_mode="r", allow_pickle=False)
            return array

        ids, rows, recent = part("ids"), part("rows"), part("recent")
        if ids.dtype.kind != "U" or rows.dtype != np.int64 or recent.dtype != np.int64:
            raise ValueError(f"{directory}/{name}: unexpected ID table dtypes")
        return cls(ids, rows, recent)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.row(item_id) != PADDING_ROW

    def rows(self, ids: Sequence[str] | Iterable[str]) -> npt.NDArray[np.int64]:
        """Rows of ``ids`` (unknown -> ``PADDING_ROW``), vectorised."""
        query = np.asarray(ids if isinstance(ids, Sequence) else list(ids), dtype=np.str_)
        if query.size == 0 or len(self) == 0:
            return np.full(query.shape[0], PADDING_ROW, dtype=np.int64)
        position = np.searchsorted(self.ids, query)
        position = np.minimum(position, len(self) - 1)
        found = self.ids[position] == query
        return np.where(found, self.rows_of_ids[position], PADDING_ROW).astype(np.int64)

    def row(self, item_id: str) -> int:
        return int(self.rows([item_id])[0])

    def contains(self, ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        known: npt.NDArray[np.bool_] = self.rows(ids) != PADDING_ROW
        return known

    def by_recency(self) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.int64]]:
        """(IDs, rows), most recently trained first."""
        return np.asarray(self.ids[self.recent]), np.asarray(self.rows_of_ids[self.recent])
