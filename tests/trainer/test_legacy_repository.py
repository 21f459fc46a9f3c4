"""Upgrading a model repository written before the typed manifest (``ExportManifest``).

The fixture ``legacy_repository/legacy-ranker`` is a real repository as the old trainer wrote
it (commit 5e89e4e^: records with an ``extra`` dict, ``ids.json`` and no ``export.json`` in the
version directories; see ``legacy_repository/README.md``): five exports, versions 3-5 on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from trainer_support import produce, small_settings

from freshrank.core.contracts.manifest import EXPORT_MANIFEST_FILE, ExportManifest, ExportRecord
from freshrank.core.model_repo import (
    IDS_FILE,
    LEGACY_BACKUP_FILE,
    MANIFEST_FILE,
    ModelRepository,
    live_model_name,
)
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton
from freshrank.ranking.model_state import ModelWatcher, load_model_state
from freshrank.ranking.triton import TritonScorer
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.trainer.service import run_service

FIXTURE = Path(__file__).parent / "legacy_repository"
MODEL = "legacy-ranker"
OLD_MODEL = {"architecture": "mf", "dim": 8, "history_len": 4, "num_users": 64, "num_items": 64}


@pytest.fixture
def legacy_root(model_repository: Path) -> Path:
    """A copy of the old repository (the upgrade rewrites it in place)."""
    shutil.copytree(FIXTURE / MODEL, model_repository / MODEL)
    return model_repository


def _old_records(root: Path) -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads((root / MODEL / MANIFEST_FILE).read_text())[
        "exports"
    ]
    return records


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, mtime ns) — what a no-op must leave as it was."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_an_old_repository_is_upgraded_once_and_ranking_reads_every_version(
    legacy_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = (legacy_root / MODEL / MANIFEST_FILE).read_text()
    old = {int(str(r["version"])): r for r in _old_records(legacy_root)}
    repo = ModelRepository(legacy_root, MODEL)
    untouched = _tree(legacy_root)
    # Read as it is (migration on read): every old record in the typed form, nothing written.
    assert [r.version for r in repo.manifest()] == [1, 2, 3, 4, 5]
    assert repo.latest_good_version() == 5
    assert _tree(legacy_root) == untouched

    with caplog.at_level(logging.INFO, logger="freshrank.core.model_repo"):
        done = repo.upgrade()

    assert done.converted == (1, 2, 3, 4, 5)
    assert done.migrated == (3, 4, 5)  # the versions still on disk got export.json + ID tables
    assert done.skipped == {}
    assert done.backup == repo.model_dir / LEGACY_BACKUP_FILE
    assert done.backup.read_text() == original  # nothing of the old manifest is lost
    lines = [r.getMessage() for r in caplog.records if "upgraded from legacy" in r.getMessage()]
    assert len(lines) == 1
    assert "5 converted" in lines[0]
    assert "[3, 4, 5]" in lines[0]
    # manifest.json is in the typed form now: the strict reader accepts every record.
    stored = json.loads((repo.model_dir / MANIFEST_FILE).read_text())
    assert set(stored) == {"exports"}
    records = [ExportRecord.from_json(r) for r in stored["exports"]]
    assert [r.version for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        extra = old[record.version]["extra"]
        assert isinstance(extra, dict)
        assert {k: getattr(record.model, k) for k in OLD_MODEL} == OLD_MODEL == extra["model"]
        assert record.events_covered == old[record.version]["events_covered"]
        assert record.metrics == old[record.version]["metrics"]
        assert record.offsets == extra["offsets"]
        assert record.id_stats == extra["id_stats"]
        assert record.served_by_triton is extra["served_by_triton"]
        assert record.timings is not None
        assert record.timings.freshness_s == extra["freshness_s"]
        assert record.timings.ready_at_ms == extra["ready_at_ms"]
        # Pruned versions (1, 2) take their ID counts from the record's statistics.
        assert record.model.users == extra["id_stats"]["users_known"]
        assert record.model.items == extra["id_stats"]["items_known"]
    assert repo.manifest() == records
    assert repo.latest_good_version() == 5
    # The live model's files are there: a trainer with triton_live can serve version 5 now.
    assert (legacy_root / live_model_name(MODEL) / "config.pbtxt").is_file()

    # Ranking reads every migrated version: export.json, and ID tables equal to ids.json.
    for version in (3, 4, 5):
        state = load_model_state(repo, version)
        ids = json.loads((repo.version_dir(version) / IDS_FILE).read_text())
        assert state.manifest == ExportManifest.read(repo.version_dir(version))
        assert state.manifest.history_len == 4
        assert state.manifest.users == len(ids["users"]["rows"])
        assert state.manifest.items == len(ids["items"]["rows"])
        for user, row in ids["users"]["rows"].items():
            assert state.user_row(user) == row
        items = list(ids["items"]["rows"])
        assert state.item_rows(items).tolist() == [ids["items"]["rows"][i] for i in items]
        newest_first = sorted(
            items, key=lambda i: (-ids["items"]["last_seen"][str(ids["items"]["rows"][i])],
                                  ids["items"]["rows"][i]),
        )  # fmt: skip
        assert state.known_items.tolist() == newest_first
    watcher = ModelWatcher(repo, _all_ready, poll_s=1.0)
    serving = asyncio.run(watcher.refresh())
    assert serving is not None
    assert serving.version == 5

    # A second open changes nothing: no file written, nothing reported, nothing logged.
    before = _tree(legacy_root)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="freshrank.core.model_repo"):
        again = repo.upgrade()
    assert not again.changed
    assert again.migrated == ()
    assert _tree(legacy_root) == before
    assert [r for r in caplog.records if r.name == "freshrank.core.model_repo"] == []


def test_an_upgrade_interrupted_before_the_manifest_is_rewritten_completes_when_run_again(
    legacy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = (legacy_root / MODEL / MANIFEST_FILE).read_text()
    repo = ModelRepository(legacy_root, MODEL)

    def crash(*_: object) -> None:
        raise OSError("killed")

    with monkeypatch.context() as patched:
        patched.setattr(ModelRepository, "_write_manifest", crash)
        with pytest.raises(OSError, match="killed"):
            repo.upgrade()
    # The old manifest is still whole (and readable); the versions already have export.json.
    assert (repo.model_dir / MANIFEST_FILE).read_text() == original
    assert [r.version for r in repo.manifest()] == [1, 2, 3, 4, 5]

    done = repo.upgrade()
    assert done.converted == (1, 2, 3, 4, 5)
    assert done.migrated == ()  # done by the interrupted run: not written twice
    backups = sorted(p.name for p in repo.model_dir.glob("manifest.legacy*"))
    assert backups == [LEGACY_BACKUP_FILE]  # one backup, the original
    assert (repo.model_dir / LEGACY_BACKUP_FILE).read_text() == original
    stored = json.loads((repo.model_dir / MANIFEST_FILE).read_text())["exports"]
    assert [ExportRecord.from_json(r).version for r in stored] == [1, 2, 3, 4, 5]
    assert load_model_state(repo, 5).manifest.users == 30


async def _all_ready(version: int) -> bool:
    return True  # Triton's readiness is not what this test is about: every version is READY


def test_records_that_do_not_say_enough_are_skipped_kept_and_named(
    legacy_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 4's record lost its model description; version 5's ids.json is gone."""
    path = legacy_root / MODEL / MANIFEST_FILE
    stored = json.loads(path.read_text())
    del stored["exports"][3]["extra"]["model"]
    path.write_text(json.dumps(stored, indent=1))
    (legacy_root / MODEL / "5" / IDS_FILE).unlink()
    untouched = {v: _tree(legacy_root / MODEL / v) for v in ("4", "5")}
    repo = ModelRepository(legacy_root, MODEL)

    with caplog.at_level(logging.INFO, logger="freshrank.core.model_repo"):
        done = repo.upgrade()

    assert done.converted == (1, 2, 3)
    assert done.migrated == (3,)
    assert sorted(done.skipped) == [4, 5]
    assert "dim" in done.skipped[4]
    assert IDS_FILE in done.skipped[5]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "[4, 5] not migrated" in warnings[0]
    # Kept as they were, on disk and (verbatim) in the manifest; never a good version.
    assert {v: _tree(legacy_root / MODEL / v) for v in ("4", "5")} == untouched
    unmigrated = json.loads(path.read_text())["unmigrated"]
    assert [u["record"] for u in unmigrated] == stored["exports"][3:]
    assert [r.version for r in repo.manifest()] == [1, 2, 3]
    assert repo.latest_good_version() == 3
    assert repo.remove_stale_temporaries() == []  # newer than the good one, still kept
    assert repo.versions() == [3, 4, 5]
    # The next export numbers after the highest version on disk.
    assert _write(repo) == 6
    assert repo.latest_good_version() == 6
    assert [u["version"] for u in json.loads(path.read_text())["unmigrated"]] == [4, 5]
    assert not repo.upgrade().changed  # and an upgraded repository stays upgraded


def _write(repo: ModelRepository) -> int:
    manifest = ExportManifest(
        architecture="mf", history_len=4, dim=8, num_users=64, num_items=64, users=0, items=0
    )

    def populate(directory: Path) -> None:
        (directory / "model.pt").write_bytes(b"model")
        manifest.write(directory)

    def record(version: int) -> ExportRecord:
        return ExportRecord(
            version=version, model=manifest, events_covered=0, last_event_timestamp_ms=0
        )

    return repo.write_version(populate, record).version


@pytest.mark.integration
async def test_the_trainer_service_starts_on_an_old_repository_and_exports_after_it(
    broker: EmbeddedBroker, unique_name: str, tmp_path: Path, legacy_root: Path
) -> None:
    """Before the upgrade, the new trainer stopped at startup (ManifestError) on it."""
    settings = small_settings(
        broker,
        unique_name,
        tmp_path,
        port=0,
        model_repository=str(legacy_root),
        export_interval_s=3600.0,
        export_every_events=100,
        keep_versions=3,
        **{k: v for k, v in OLD_MODEL.items() if k != "architecture"},
    )
    # The old repository under this test's model name (its own topics on the shared broker).
    (legacy_root / MODEL).rename(legacy_root / settings.triton_model)
    repo = ModelRepository(legacy_root, settings.triton_model)
    events = list(SyntheticStream(SyntheticConfig(users=30, items=30, events=100)).events())
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=CollectorRegistry())
    )
    try:
        # At start, before any export: the versions on disk are readable by ranking.
        await _until(lambda: (repo.version_dir(5) / EXPORT_MANIFEST_FILE).is_file(), service)
        assert [r.version for r in repo.manifest()] == [1, 2, 3, 4, 5]
        produce(broker, settings.events_topic, events)
        await _until(lambda: repo.record(6) is not None, service)
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)

    assert [r.version for r in repo.manifest()] == [1, 2, 3, 4, 5, 6]
    assert repo.versions() == [4, 5, 6]  # retention as before: the newest keep_versions
    for version in repo.versions():
        assert (repo.version_dir(version) / EXPORT_MANIFEST_FILE).is_file()
        assert load_model_state(repo, version).manifest.history_len == 4
    assert (repo.model_dir / LEGACY_BACKUP_FILE).is_file()


async def _until(condition: Callable[[], bool], service: asyncio.Task[None]) -> None:
    """Poll ``condition`` under a generous deadline; a crashed service fails at once."""
    deadline = asyncio.get_running_loop().time() + 120.0
    while not condition():
        assert not service.done(), service
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


@pytest.mark.integration
async def test_a_live_trainer_serves_the_old_versions_at_once_on_an_upgraded_repository(
    broker: EmbeddedBroker,
    unique_name: str,
    tmp_path: Path,
    legacy_root: Path,
    triton: EmbeddedTriton,
) -> None:
    """No event, no export: the newest old version (its model.pt as the old trainer wrote it)
    is served by the live model, which the legacy repository did not have, and ranking's
    live scorer reads and scores it."""
    settings = small_settings(
        broker,
        unique_name,
        tmp_path,
        port=0,
        model_repository=str(legacy_root),
        triton_url=f"http://{triton.http_url}",
        triton_live=True,
        watch_s=0.5,
        **{k: v for k, v in OLD_MODEL.items() if k != "architecture"},
    )
    assert triton.model_repository == legacy_root  # Triton serves the upgraded repository
    (legacy_root / MODEL).rename(legacy_root / settings.triton_model)
    repo = ModelRepository(legacy_root, settings.triton_model)
    registry = CollectorRegistry()
    scorer = TritonScorer(
        f"http://{triton.http_url}", settings.triton_model, live=True, deadline_s=5.0
    )
    watcher = ModelWatcher(repo, scorer.is_ready, poll_s=1.0)
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(settings, stop, handle_signals=False, registry=registry)
    )
    try:
        await _until(
            lambda: registry.get_sample_value("freshrank_trainer_model_version") == 5, service
        )
        serving = await watcher.refresh()
        assert serving is not None
        assert serving.version == 5
        items = serving.known_items[:3].tolist()
        user = str(serving.users.ids[0])
        history, candidates = serving.item_rows(items[:1]), serving.item_rows(items)
        scores = await scorer.score(5, serving.user_row(user), history, candidates)
        for version in (3, 4):  # the older ones still on disk are served in place too
            assert await scorer.is_ready(version)
    finally:
        await scorer.close()
        stop.set()
        await asyncio.wait_for(service, 60)
    assert scores.shape == (3,)
    assert repo.versions() == [3, 4, 5]  # nothing exported, nothing removed
