"""The model repository contract (Triton layout) and its only writer.

```
<root>/<name>-ranker/config.pbtxt              production: pytorch_libtorch, dynamic batching
<root>/<name>-ranker/configs/python.pbtxt      embedded: Python backend serving the same model.pt
<root>/<name>-ranker/manifest.json             the last ``manifest_keep`` ExportRecords, newest last
<root>/<name>-ranker/<version>/model.pt        TorchScript
<root>/<name>-ranker/<version>/model.py        Python-backend loader (ignored by libtorch)
<root>/<name>-ranker/<version>/ids.json        ID -> embedding-row maps of this version
```

A version directory is assembled under a dot-prefixed temporary name and renamed into place,
so Triton and the ranking service never see a partial model. A version is *good* once its
record is in the manifest: the record is written only after Triton reported it READY.
Model I/O (every architecture): ``user_row`` INT64 [1], ``history_rows`` INT64 [H]
(0 = padding), ``candidate_rows`` INT64 [C] -> ``scores`` FP32 [C]; the first dimension is
the batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "IDS_FILE",
    "INPUTS",
    "MANIFEST_FILE",
    "MANIFEST_KEEP",
    "MODEL_FILE",
    "OUTPUT",
    "ExportRecord",
    "ModelRepository",
    "render_config",
]

MODEL_FILE = "model.pt"
IDS_FILE = "ids.json"
MANIFEST_FILE = "manifest.json"
PYTHON_CONFIG = "python"  # --model-config-name for the embedded Triton
INPUTS = ("user_row", "history_rows", "candidate_rows")
OUTPUT = "scores"
MAX_BATCH_SIZE = 64
MANIFEST_KEEP = 100


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportRecord:
    """What an exported version carries: written to the manifest beside the model."""

    version: int
    architecture: str
    events_covered: int  # events trained on, cumulative
    last_event_timestamp_ms: int  # newest event time the model has seen
    exported_at_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRecord:
        return cls(**data)


def render_config(model_name: str, *, backend: str) -> str:
    """``config.pbtxt`` for ``backend`` in {"pytorch_libtorch", "python"}."""
    if backend == "pytorch_libtorch":
        head = f'name: "{model_name}"\nplatform: "pytorch_libtorch"\n'
        batching = "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        instances = "instance_group [ { kind: KIND_AUTO, count: 1 } ]\n"
    elif backend == "python":
        head = f'name: "{model_name}"\nbackend: "python"\n'
        batching = "dynamic_batching { max_queue_delay_microseconds: 200 }\n"
        instances = "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    inputs = ",\n".join(
        f'  {{ name: "{name}" data_type: TYPE_INT64 dims: [ {1 if name == "user_row" else -1} ] }}'
        for name in INPUTS
    )
    return (
        head
        + f"max_batch_size: {MAX_BATCH_SIZE}\n"
        + f"input [\n{inputs}\n]\n"
        + f'output [\n  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ -1 ] }}\n]\n'
        + batching
        + instances
        # One version: Triton keeps serving the old one until the new one is READY, then
        # swaps atomically (the ranking service re-resolves a version Triton dropped). Two
        # would make every load reload the unchanged older version too, doubling load time.
        + "version_policy: { latest: { num_versions: 1 } }\n"
    )


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
        path = self.model_dir / MANIFEST_FILE
        if not path.exists():
            return []
        return [ExportRecord.from_json(r) for r in json.loads(path.read_text())["exports"]]

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
        removed += [self.version_dir(v) for v in self.versions() if v > good]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return [p.name for p in removed]

    def write_version(
        self, populate: Callable[[Path], None], record: Callable[[int], ExportRecord]
    ) -> ExportRecord:
        """Create the next version: ``populate(tmp_dir)`` writes model.pt and ids.json."""
        self._write_configs()
        version = (self.latest_version() or 0) + 1
        tmp = self.model_dir / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            populate(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise FileNotFoundError(f"populate() wrote no {MODEL_FILE}")
            loader = resources.files("freshrank.core").joinpath("triton_python_model.py")
            (tmp / "model.py").write_text(loader.read_text())
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

    def _write_configs(self) -> None:
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

    def _append_manifest(self, entry: ExportRecord) -> None:
        exports = [dataclasses.asdict(r) for r in self.manifest()]
        exports.append(dataclasses.asdict(entry))
        exports = exports[-max(1, self.manifest_keep) :]
        _atomic_write(self.model_dir / MANIFEST_FILE, json.dumps({"exports": exports}, indent=1))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
