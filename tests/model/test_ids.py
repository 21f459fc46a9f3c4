import json

import numpy as np

from freshrank.model.ids import MAX_ID_BYTES, PADDING_ROW, IdMap


def test_every_active_id_owns_its_own_row() -> None:
    table = IdMap(10_001)
    ids = [f"item-{i}" for i in range(10_000)]
    rows, evicted = table.assign(ids)
    assert evicted == []
    assert len(np.unique(rows)) == len(ids)
    assert PADDING_ROW not in rows
    assert table.rows(ids).tolist() == rows.tolist()
    assert table.row("never-seen") == PADDING_ROW


def test_eviction_hands_back_least_recent_rows_and_counts_them() -> None:
    table = IdMap(201)  # 200 usable rows, evicts 2 (1%) at a time
    old, _ = table.assign([f"old-{i}" for i in range(100)])
    table.assign([f"new-{i}" for i in range(100)])
    rows, evicted = table.assign(["newest"])
    assert len(evicted) == 2
    assert set(evicted) <= set(old.tolist())
    assert rows[0] in evicted
    assert table.evictions == 2
    active = table.rows(table.known_ids())
    assert len(np.unique(active)) == len(active) == 199


def test_state_dict_round_trip_assigns_the_same_rows_after_evictions() -> None:
    table = IdMap(101)
    table.assign([f"a{i}" for i in range(100)])
    table.assign(["b1", "b2"])  # evicts
    resumed = IdMap.from_state_dict(table.state_dict())
    new = [f"c{i}" for i in range(5)]
    assert resumed.assign(new)[0].tolist() == table.assign(new)[0].tolist()
    assert resumed.to_json() == table.to_json()


def test_an_id_over_the_byte_limit_is_never_stored_and_maps_to_the_cold_start_row() -> None:
    table = IdMap(11)
    huge, at_limit = "x" * 200_000, "é" * (MAX_ID_BYTES // 2)  # 2 bytes per character
    rows, evicted = table.assign([huge, at_limit, huge])
    assert evicted == []
    assert rows.tolist()[0] == rows.tolist()[2] == PADDING_ROW
    assert rows.tolist()[1] != PADDING_ROW
    assert table.oversized == 2
    assert len(table) == 1
    assert table.row(huge) == PADDING_ROW
    assert huge not in json.dumps(table.to_json())
