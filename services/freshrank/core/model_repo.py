"""The model repository contract (Triton layout) and its only writer.

```
<root>/<name>-ranker/config.pbtxt              production: pytorch_libtorch, dynamic batching
<root>/<name>-ranker/configs/python.pbtxt      embedded: Python backend serving the same model.pt
<root>/<name>-ranker/manifest.json             the last ``manifest_keep`` ExportRecords, newest last
<root>/<name>-ranker/manifest.legacy.json      a repository upgraded from legacy records: the
                                                 manifest.json as it was (``upgrade``)
<root>/<name>-ranker/<version>/model.pt        TorchScript
<root>/<name>-ranker/<version>/model.py        Python-backend loader (ignored by libtorch)
<root>/<name>-ranker/<version>/export.json     ExportManifest: architecture, history length, sizes
<root>/<name>-ranker/<version>/ids/            compact ID tables ranking memory-maps (core.id_table)
<root>/<name>-ranker/<version>/ids.json        the same maps as JSON (tools only, not serving)
<root>/<name>-ranker-live/config.pbtxt         embedded: one long-lived model (our C++ backend,
<root>/<name>-ranker-live/1/                     ``LIVE_BACKEND``) serving every version of
                                                 <name>-ranker in place
```

The live model (``live_model_name``) is how the embedded Triton serves: a new version costs no
model load in Triton, and the previous version keeps answering until callers moved on
(``freshrank/embedded/live_backend.cc``: TorchScript inside tritonserver). Requests name the
version in an extra ``model_version`` input instead of Triton's version field.

A version directory is assembled under a dot-prefixed temporary name and renamed into place,
so Triton and the ranking service never see a partial model. A version is *good* once its
record is in the manifest: the record is written only after Triton reported it READY.
Repositories written before the typed manifest (legacy records with an ``extra`` dict, no
``export.json``, only ``ids.json``) are read as they are (``ExportRecord.from_stored_json``) and
upgraded in place once by the trainer at start (``ModelRepository.upgrade``).

Model I/O (every architecture): ``user_row`` INT64 [1], ``history_rows`` INT64 [H]
(0 = padding), ``candidate_rows`` INT64 [C] -> ``scores`` FP32 [C]; the first dimension is
the batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrank.core.contracts.manifest import (
    EXPORT_MANIFEST_FILE,
    ExportManifest,
    ExportRecord,
    ManifestError,
    is_legacy_record,
    legacy_export_manifest,
)
from freshrank.core.id_table import ID_TABLES_DIR, IdTable

__all__ = [
    "IDS_FILE",
    "INPUTS",
    "LEGACY_BACKUP_FILE",
    "LIVE_BACKEND",
    "LIVE_SUFFIX",
    "LIVE_VERSION",
    "MANIFEST_FILE",
    "MANIFEST_KEEP",
    "MODEL_FILE",
    "OUTPUT",
    "VERSION_INPUT",
    "ExportRecord",
    "ModelRepository",
    "Upgrade",
    "live_model_name",
    "ranking_arrays",
    "render_config",
    "triton_inputs",
]

MODEL_FILE = "model.pt"
IDS_FILE = "ids.json"
MANIFEST_FILE = "manifest.json"
LEGACY_BACKUP_FILE = "manifest.legacy.json"  # manifest.json as it was before ``upgrade``
PYTHON_CONFIG = "python"  # --model-config-name for the embedded Triton
INPUTS = ("user_row", "history_rows", "candidate_rows")
VERSION_INPUT = "model_version"  # live model only: which version scores this request
OUTPUT = "scores"
MAX_BATCH_SIZE = 64
MANIFEST_KEEP = 100
LIVE_SUFFIX = "-live"
LIVE_VERSION = 1  # the live model's one Triton version (an empty directory)
LIVE_BACKEND = "freshrank"  # the live model's backend: freshrank/embedded/live_backend.cc

log = logging.getLogger(__name__)


def ranking_arrays(
    user_row: int,
    history: npt.NDArray[np.int64],
    candidates: npt.NDArray[np.int64],
    version: int | None = None,
) -> list[tuple[str, npt.NDArray[np.int64]]]:
    """One ranking's request tensors by name, a batch of one; ``version`` is the live model's
    extra input, None for a versioned model."""
    arrays = [
        (INPUTS[0], np.array([[user_row]], dtype=np.int64)),
        (INPUTS[1], history.reshape(1, -1)),
        (INPUTS[2], candidates.reshape(1, -1)),
    ]
    if version is not None:
        arrays.append((VERSION_INPUT, np.array([[version]], dtype=np.int64)))
    return arrays


def triton_inputs(
    infer_input: Callable[[str, list[int], str], Any],
    user_row: int,
    history: npt.NDArray[np.int64],
    candidates: npt.NDArray[np.int64],
    version: int | None = None,
) -> list[Any]:
    """``ranking_arrays`` as a tritonclient's inputs (``infer_input``: its ``InferInput``,
    HTTP or gRPC)."""
    inputs = []
    for name, array in ranking_arrays(user_row, history, candidates, version):
        tensor = infer_input(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def live_model_name(model_name: str) -> str:
    """The long-lived model serving every version of ``model_name``."""
    return f"{model_name}{LIVE_SUFFIX}"


def render_config(model_name: str, *, backend: str, versions_dir: str = "") -> str:
    """``config.pbtxt`` for ``backend`` in {"pytorch_libtorch", "python", ``LIVE_BACKEND``};
    the live backend needs ``versions_dir`` (relative to this model's directory)."""
    names = list(INPUTS)
    parameters = ""
    if backend == "pytorch_libtorch":
        head = f'name: "{model_name}"\nplatform: "pytorch_libtorch"\n'
        batching = "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        instances = "instance_group [ { kind: KIND_AUTO, count: 1 } ]\n"
    elif backend in ("python", LIVE_BACKEND):
        head = f'name: "{model_name}"\nbackend: "{backend}"\n'
        # Requests queued while the model runs are batched whatever the delay, so none is
        # added: any delay is paid by every lone request (at 200 req/s, one every 5 ms, most
        # are alone; 100 us of delay was 0.14 ms of a 0.7 ms round trip).
        batching = "dynamic_batching { max_queue_delay_microseconds: 0 }\n"
        instances = "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    if (backend == LIVE_BACKEND) != bool(versions_dir):
        raise ValueError(f"versions_dir is for the {LIVE_BACKEND} backend, and it needs one")
    if versions_dir:
        names.append(VERSION_INPUT)
        value = f'{{ string_value: "{versions_dir}" }}'
        parameters = f'parameters: {{ key: "versions_dir" value: {value} }}\n'
    inputs = ",\n".join(
        f'  {{ name: "{name}" data_type: TYPE_INT64 dims: '
        f"[ {1 if name in ('user_row', VERSION_INPUT) else -1} ] }}"
        for name in names
    )
    if versions_dir:  # one version forever: it serves the ranker's versions in place
        policy = f"version_policy: {{ specific: {{ versions: [ {LIVE_VERSION} ] }} }}\n"
    else:
        # One version: Triton keeps serving the old one until the new one is READY, then
        # swaps atomically (the ranking service re-resolves a version Triton dropped). Two
        # would make every load reload the unchanged older version too, doubling load time.
        policy = "version_policy: { latest: { num_versions: 1 } }\n"
    return (
        head
        + f"max_batch_size: {MAX_BATCH_SIZE}\n"
        + f"input [\n{inputs}\n]\n"
        + f'output [\n  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ -1 ] }}\n]\n'
        + batching
        + instances
        + parameters
        + policy
    )


@dataclasses.dataclass(frozen=True)
class Upgrade:
    """What ``ModelRepository.upgrade`` did (all empty: the repository was current)."""

    converted: tuple[int, ...] = ()  # legacy records now in the typed form
    migrated: tuple[int, ...] = ()  # version directories given export.json and ID tables
    skipped: dict[int, str] = dataclasses.field(default_factory=dict)  # version -> why not
    backup: Path | None = None  # the manifest.json as it was

    @property
    def changed(self) -> bool:
        return bool(self.converted or self.skipped)


class ModelRepository:
    """One model's directory in a Triton model repository.

    ``manifest_keep`` bounds the manifest: the newest records are kept (at least as many as
    versions kept on disk), older ones dropped, so it does not grow with every export.
    """

    def __init__(self, root: Path, model_name: str, *, manifest_keep: int = MANIFEST_KEEP) -> None:
        self.root = root
        self.model_name = model_name
        self.model_dir = root / model_name
        self.manifest_keep = manifest_keep
        self._upgraded = False  # upgrade() ran in this process, so the repository is current

    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit())

    def latest_version(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        return self.model_dir / str(version)

    def manifest(self) -> list[ExportRecord]:
        """The export records, oldest first; legacy ones read in the typed form (one that
        does not say enough to be typed is left out: ``upgrade`` reports it)."""
        return self._records(self._stored_manifest())

    @staticmethod
    def _records(stored: dict[str, Any]) -> list[ExportRecord]:
        records = []
        for data in stored["exports"]:
            try:
                records.append(ExportRecord.from_stored_json(data))
            except ManifestError:
                if not is_legacy_record(data):
                    raise  # a current record that does not match its type: a real fault
        return records

    def _stored_manifest(self) -> dict[str, Any]:
        path = self.model_dir / MANIFEST_FILE
        if not path.exists():
            return {"exports": []}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def upgrade(self) -> Upgrade:
        """Bring a repository written before the typed manifest up to date, in place.

        Call at start with no writer running (the trainer does, before anything else reads
        or writes it); idempotent: on a current repository it writes nothing. For every legacy
        record, the version directory (when still on disk and without one) gets its
        ``export.json`` (from the record's ``extra``, its ``ids.json`` and the counts of its ID
        maps) and the ``ids/`` tables ranking memory-maps, built from its ``ids.json``; then
        ``manifest.json`` is rewritten atomically in the typed form, after the original was
        saved as ``manifest.legacy.json``. A record that does not say enough (or a version
        whose ``ids.json`` cannot be read) is *skipped*: its directory stays untouched on disk,
        it is not a good version (never served), the original record is kept under
        ``unmigrated`` in the manifest, and a warning names it. Version numbers continue after
        the highest on disk, skipped ones included."""
        done = self._upgrade_legacy_records()
        self._upgraded = True  # later exports of this process need not look again
        return done

    def _upgrade_legacy_records(self) -> Upgrade:
        path = self.model_dir / MANIFEST_FILE
        self._write_configs_if_present()  # e.g. the live model, which legacy repositories lack
        if not path.exists():
            return Upgrade()
        text = path.read_text()
        stored = json.loads(text)
        if not any(is_legacy_record(data) for data in stored["exports"]):
            return Upgrade()
        backup = self._save_legacy_manifest(text)
        exports: list[dict[str, Any]] = []
        unmigrated: list[dict[str, Any]] = list(stored.get("unmigrated", []))
        converted: list[int] = []
        migrated: list[int] = []
        skipped: dict[int, str] = {}
        for data in stored["exports"]:
            if not is_legacy_record(data):
                exports.append(data)
                continue
            try:
                record, wrote = self._migrate(data)
            except (ManifestError, OSError, ValueError, KeyError) as exc:
                version = data.get("version", -1) if isinstance(data, dict) else -1
                reason = f"{type(exc).__name__}: {exc}"
                skipped[version] = reason
                unmigrated.append({"version": version, "reason": reason, "record": data})
                continue
            exports.append(record.to_json())
            converted.append(record.version)
            if wrote:
                migrated.append(record.version)
        self._write_manifest(exports, unmigrated)
        done = Upgrade(tuple(converted), tuple(migrated), skipped, backup)
        log.info(
            "model repository upgraded from legacy records: %d converted, versions %s given "
            "export.json and ID tables, %d skipped; the old manifest is kept as %s",
            len(converted), migrated, len(skipped), backup,
            extra={"model": self.model_name, "converted": converted, "migrated": migrated},
        )  # fmt: skip
        if skipped:
            log.warning(
                "legacy model versions %s not migrated (left on disk untouched, never served; "
                "re-export or remove them): %s",
                sorted(skipped, key=str), skipped,
                extra={"model": self.model_name, "skipped": sorted(skipped, key=str)},
            )  # fmt: skip
        return done

    def _migrate(self, data: dict[str, Any]) -> tuple[ExportRecord, bool]:
        """One legacy record in the typed form; its version directory (if still on disk)
        given ``export.json`` and the ID tables. Returns (record, whether files were written)."""
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(f"legacy record: version {version!r} is not an integer")
        directory = self.version_dir(version)
        if not directory.is_dir():  # pruned: the record is history only
            return ExportRecord.from_legacy_json(data), False
        if (directory / EXPORT_MANIFEST_FILE).is_file() and (directory / ID_TABLES_DIR).is_dir():
            # Migrated by an upgrade that was interrupted before the manifest was rewritten.
            return ExportRecord.from_legacy_json(data, model=ExportManifest.read(directory)), False
        ids = json.loads((directory / IDS_FILE).read_text())
        tables = {name: IdTable.from_id_map_json(ids[name]) for name in ("users", "items")}
        files = {
            "architecture": ids.get("architecture"),
            "history_len": ids.get("history_len"),
            **{name: len(table) for name, table in tables.items()},
        }
        model = legacy_export_manifest(data, version_dir=files)
        record = ExportRecord.from_legacy_json(data, model=model)
        # The tables first, export.json last: a version with export.json is complete.
        tmp = directory / f".{ID_TABLES_DIR}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, table in tables.items():
            table.save(tmp, name)
        _fsync_dir_tree(tmp)
        shutil.rmtree(directory / ID_TABLES_DIR, ignore_errors=True)
        os.rename(tmp, directory / ID_TABLES_DIR)
        _atomic_write(directory / EXPORT_MANIFEST_FILE, json.dumps(model.to_json(), indent=1))
        return record, True

    def _save_legacy_manifest(self, text: str) -> Path:
        """``text`` (the legacy manifest.json) as ``manifest.legacy.json``; never overwrites a
        different earlier backup (then ``manifest.legacy.<n>.json``)."""
        stem, suffix = LEGACY_BACKUP_FILE.removesuffix(".json"), ".json"
        for attempt in range(1000):
            name = LEGACY_BACKUP_FILE if attempt == 0 else f"{stem}.{attempt}{suffix}"
            path = self.model_dir / name
            if not path.exists():
                _atomic_write(path, text)
                return path
            if path.read_text() == text:  # an interrupted upgrade saved it already
                return path
        raise FileExistsError(f"{self.model_dir}: too many {LEGACY_BACKUP_FILE} backups")

    def export_manifest(self, version: int) -> ExportManifest:
        """The version's ``export.json`` (raises ``ManifestError``/``OSError`` when absent)."""
        return ExportManifest.read(self.version_dir(version))

    def record(self, version: int) -> ExportRecord | None:
        return next((r for r in self.manifest() if r.version == version), None)

    def latest_good_version(self) -> int | None:
        """The newest version on disk with a manifest record (it was READY on Triton once)."""
        recorded = {r.version for r in self.manifest()}
        good = [v for v in self.versions() if v in recorded]
        return good[-1] if good else None

    def remove_stale_temporaries(self) -> list[str]:
        """What a writer killed mid-export left (call at start, with no writer running):
        half-assembled ``.tmp-*`` directories, and versions newer than the newest good one
        (renamed into place, never READY: Triton must not load them as "latest")."""
        if not self.model_dir.is_dir():
            return []
        removed = [p for p in self.model_dir.glob(".tmp-*") if p.is_dir()]
        good = self.latest_good_version() or 0
        # Legacy versions ``upgrade`` could not migrate are an operator's to decide on.
        kept = {entry.get("version") for entry in self._stored_manifest().get("unmigrated", [])}
        removed += [self.version_dir(v) for v in self.versions() if v > good and v not in kept]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return [p.name for p in removed]

    def write_version(
        self, populate: Callable[[Path], None], record: Callable[[int], ExportRecord]
    ) -> ExportRecord:
        """Create the next version: ``populate(tmp_dir)`` writes model.pt, export.json and
        the ID tables (``freshrank.model.export.export_version``)."""
        if not self._upgraded:  # an older trainer's repository, unless upgrade() ran already
            self.upgrade()
        self._write_configs()
        version = (self.latest_version() or 0) + 1
        tmp = self.model_dir / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            populate(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise FileNotFoundError(f"populate() wrote no {MODEL_FILE}")
            (tmp / "model.py").write_text(_loader_source())
            _fsync_dir_tree(tmp)
            os.rename(tmp, self.version_dir(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = record(version)
        self._append_manifest(entry)
        return entry

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions; returns the removed ones."""
        removed = self.versions()[:-keep] if keep > 0 else []
        for version in removed:
            shutil.rmtree(self.version_dir(version), ignore_errors=True)
        return removed

    @property
    def live_dir(self) -> Path:
        return self.root / live_model_name(self.model_name)

    def write_live_model(self) -> None:
        """The live model's config (idempotent; the embedded Triton loads it)."""
        config = self.live_dir / "config.pbtxt"
        text = render_config(
            live_model_name(self.model_name),
            backend=LIVE_BACKEND,
            versions_dir=f"../{self.model_name}",
        )
        if not config.exists() or config.read_text() != text:
            _atomic_write(config, text)
        version = self.live_dir / str(LIVE_VERSION)
        version.mkdir(parents=True, exist_ok=True)  # Triton serves versions with a directory
        (version / "model.py").unlink(missing_ok=True)  # the Python-backend loader it once had

    def _write_configs(self) -> None:
        self.write_live_model()
        configs = {
            self.model_dir / "config.pbtxt": render_config(
                self.model_name, backend="pytorch_libtorch"
            ),
            self.model_dir / "configs" / f"{PYTHON_CONFIG}.pbtxt": render_config(
                self.model_name, backend="python"
            ),
        }
        for path, text in configs.items():
            if not path.exists() or path.read_text() != text:
                _atomic_write(path, text)

    def _write_configs_if_present(self) -> None:
        if self.versions():
            self._write_configs()

    def _append_manifest(self, entry: ExportRecord) -> None:
        stored = self._stored_manifest()  # read once: the records and the unmigrated
        exports = [r.to_json() for r in self._records(stored)]
        exports.append(entry.to_json())
        exports = exports[-max(1, self.manifest_keep) :]
        # Skipped legacy versions are remembered while their directory is on disk.
        on_disk = set(self.versions())
        unmigrated = [u for u in stored.get("unmigrated", []) if u.get("version") in on_disk]
        self._write_manifest(exports, unmigrated)

    def _write_manifest(
        self, exports: list[dict[str, Any]], unmigrated: list[dict[str, Any]]
    ) -> None:
        data: dict[str, Any] = {"exports": exports}
        if unmigrated:
            data["unmigrated"] = unmigrated
        _atomic_write(self.model_dir / MANIFEST_FILE, json.dumps(data, indent=1))


def _loader_source() -> str:
    return resources.files("freshrank.core").joinpath("triton_python_model.py").read_text()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
