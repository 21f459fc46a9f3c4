"""Compact ID tables: the same rows as the trainer's maps, opened without a parse."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freshrank.core.id_table import PADDING_ROW, IdTable


def test_rows_match_the_map_and_unknown_ids_get_the_cold_start_row(tmp_path: Path) -> None:
    rows = {"u10": 3, "u2": 1, "ü-ß": 2, "a-much-longer-id": 4}
    IdTable.build(rows, {1: 5, 2: 9, 3: 1, 4: 9}).save(tmp_path, "users")
    table = IdTable.load(tmp_path, "users")
    assert isinstance(table.ids, np.memmap)  # opened, not parsed
    query = ["u2", "u10", "ü-ß", "nope", "", "u1", "u100", "a-much-longer-id-and-more"]
    assert table.rows(query).tolist() == [1, 3, 2, 0, 0, 0, 0, 0]
    assert table.row("a-much-longer-id") == 4
    assert "u2" in table
    assert "u3" not in table
    assert len(table) == 4
    ids, by_recency = table.by_recency()
    assert ids.tolist() == ["ü-ß", "a-much-longer-id", "u2", "u10"]  # seen 9, 9 (row order), 5, 1
    assert by_recency.tolist() == [2, 4, 1, 3]


def test_an_empty_table_maps_everything_to_the_padding_row(tmp_path: Path) -> None:
    IdTable.build({}).save(tmp_path, "items")
    table = IdTable.load(tmp_path, "items")
    assert table.rows(["x", "y"]).tolist() == [PADDING_ROW, PADDING_ROW]
    assert table.rows([]).tolist() == []
    assert len(table) == 0


def test_a_hundred_thousand_ids_are_mapped_without_per_id_objects(tmp_path: Path) -> None:
    rows = {f"u{i}": i + 1 for i in range(100_000)}
    IdTable.build(rows).save(tmp_path, "users")
    table = IdTable.load(tmp_path, "users")
    # Memory-mapped arrays, no dict of 100k entries: opening a version parses nothing (the
    # ids.json parse this replaces held the GIL for ~350 ms at this size).
    assert all(isinstance(a, np.memmap) for a in (table.ids, table.rows_of_ids, table.recent))
    probe = [f"u{i}" for i in range(0, 100_000, 997)]
    assert table.rows(probe).tolist() == [rows[u] for u in probe]
