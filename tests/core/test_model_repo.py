"""The model repository's bounds: manifest retention, cleanup after a killed writer; the
live model's config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshrank.core.contracts.manifest import ExportManifest
from freshrank.core.model_repo import (
    LIVE_BACKEND,
    LIVE_VERSION,
    MANIFEST_FILE,
    ExportRecord,
    ModelRepository,
    render_config,
)

MANIFEST = ExportManifest(
    architecture="mf", history_len=4, dim=8, num_users=10, num_items=10, users=0, items=0
)


def _write(repo: ModelRepository) -> int:
    def populate(directory: Path) -> None:
        (directory / "model.pt").write_bytes(b"model")

    def record(version: int) -> ExportRecord:
        return ExportRecord(
            version=version, model=MANIFEST, events_covered=version, last_event_timestamp_ms=0
        )

    return repo.write_version(populate, record).version


def test_manifest_keeps_the_last_n_records(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "m-ranker", manifest_keep=4)
    for _ in range(10):
        _write(repo)
    assert [r.version for r in repo.manifest()] == [7, 8, 9, 10]
    exports = json.loads((repo.model_dir / MANIFEST_FILE).read_text())["exports"]
    assert len(exports) == 4


def test_leftovers_of_a_killed_export_are_removed_at_start(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "m-ranker")
    assert _write(repo) == 1
    assert _write(repo) == 2
    # Killed mid-assembly, and killed after the rename but before READY (no record).
    (repo.model_dir / ".tmp-3-4242").mkdir()
    (repo.model_dir / ".tmp-3-4242" / "model.pt").write_bytes(b"half")
    repo.version_dir(3).mkdir()
    (repo.version_dir(3) / "model.pt").write_bytes(b"never READY")
    assert repo.latest_version() == 3
    assert repo.latest_good_version() == 2

    removed = repo.remove_stale_temporaries()
    assert sorted(removed) == [".tmp-3-4242", "3"]
    assert repo.versions() == [1, 2]
    assert sorted(p.name for p in repo.model_dir.iterdir() if p.name.startswith(".")) == []
    assert _write(repo) == 3


def test_the_live_model_is_written_for_the_live_backend_over_the_rankers_versions(
    tmp_path: Path,
) -> None:
    repo = ModelRepository(tmp_path, "m-ranker")
    (repo.live_dir / str(LIVE_VERSION)).mkdir(parents=True)
    (repo.live_dir / str(LIVE_VERSION) / "model.py").write_text("# the old Python loader")
    _write(repo)
    config = (repo.live_dir / "config.pbtxt").read_text()
    assert f'backend: "{LIVE_BACKEND}"' in config
    assert 'string_value: "../m-ranker"' in config
    assert 'name: "model_version"' in config
    # Triton serves the versions that have a directory; the old loader is gone from it.
    assert list((repo.live_dir / str(LIVE_VERSION)).iterdir()) == []


def test_only_the_live_backend_takes_a_versions_directory() -> None:
    with pytest.raises(ValueError, match="versions_dir"):
        render_config("m-ranker", backend="python", versions_dir="../m-ranker")
    with pytest.raises(ValueError, match="versions_dir"):
        render_config("m-ranker-live", backend=LIVE_BACKEND)
