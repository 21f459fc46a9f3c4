"""The export contract: typed, round-trips through JSON, refuses what it does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshrank.core.contracts.manifest import (
    EXPORT_MANIFEST_FILE,
    ExportManifest,
    ExportRecord,
    ExportTimings,
    ManifestError,
)

MANIFEST = ExportManifest(
    architecture="sasrec", history_len=20, dim=32, num_users=1001, num_items=501, users=7, items=9
)


def test_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    MANIFEST.write(tmp_path)
    assert ExportManifest.read(tmp_path) == MANIFEST
    assert json.loads((tmp_path / EXPORT_MANIFEST_FILE).read_text())["history_len"] == 20


def test_record_round_trips_with_timings() -> None:
    record = ExportRecord(
        version=4,
        model=MANIFEST,
        events_covered=1200,
        last_event_timestamp_ms=1_700_000_000_000,
        metrics={"hr@10": 0.4},
        timings=ExportTimings(
            last_ingest_timestamp_ms=1, ready_at_ms=2, freshness_s=1.5, staged_s=1.0, publish_s=0.5
        ),
        offsets={"shop.events:0": 1200},
        id_stats={"users_known": 7},
        served_by_triton=True,
    )
    again = ExportRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.architecture == "sasrec"
    bare = ExportRecord(version=1, model=MANIFEST, events_covered=0, last_event_timestamp_ms=0)
    assert ExportRecord.from_json(bare.to_json()).timings is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra_key": 1}, "unknown keys"),
        ({"history_len": None}, "history_len"),
        ({"history_len": "20"}, "history_len"),
        ({"history_len": True}, "boolean"),
        ({"history_len": 0}, ">= 1"),
    ],
)
def test_manifest_refuses_what_it_does_not_know(change: dict[str, object], message: str) -> None:
    data = {**MANIFEST.to_json(), **change}
    with pytest.raises(ManifestError, match=message):
        ExportManifest.from_json(data)


def test_missing_fields_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    data = MANIFEST.to_json()
    del data["architecture"]
    with pytest.raises(ManifestError, match="missing keys \\['architecture'\\]"):
        ExportManifest.from_json(data)
    (tmp_path / EXPORT_MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match=r"export\.json"):
        ExportManifest.read(tmp_path)
    legacy = {"version": 1, "architecture": "din", "events_covered": 0,
              "last_event_timestamp_ms": 0, "extra": {"history_len": 20}}  # fmt: skip
    with pytest.raises(ManifestError, match="unknown keys"):
        ExportRecord.from_json(legacy)
