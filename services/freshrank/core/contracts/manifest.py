"""The export contract: what one model version is (``ExportManifest``) and what publishing it
recorded (``ExportRecord``), typed, written by the trainer and read by ranking, demo and bench.

``ExportManifest`` lives in the version directory (``export.json``) beside ``model.pt`` and the
ID tables, so it is renamed into place with them: whoever sees the version sees its manifest.
It is written once, by ``freshrank.model.export``, and ranking reads it once per version: the
history length and the architecture have no other source and no fallback.

``ExportRecord`` is one entry of the repository's ``manifest.json`` (the export history),
appended by the trainer's exporter after Triton served the version.

Records written before these types (a free-form ``extra`` dict, ``architecture`` at the top, no
``export.json`` beside the model) are *legacy records*: ``ExportRecord.from_stored_json`` reads
both, mapping a legacy record's ``extra`` onto the typed fields (``from_legacy_json``); the
repository rewrites them in the typed form once (``core.model_repo.ModelRepository.upgrade``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Self

__all__ = [
    "EXPORT_MANIFEST_FILE",
    "ExportManifest",
    "ExportRecord",
    "ExportTimings",
    "ManifestError",
    "is_legacy_record",
    "legacy_export_manifest",
]

EXPORT_MANIFEST_FILE = "export.json"
# What the writer of legacy records put in each (``dataclasses.asdict`` of its ExportRecord).
_LEGACY_RECORD_KEYS = frozenset(
    {"version", "architecture", "events_covered", "last_event_timestamp_ms", "exported_at_ms"}
    | {"metrics", "extra"}
)
_LEGACY_TIMINGS = (
    "last_ingest_timestamp_ms",
    "ready_at_ms",
    "freshness_s",
    "staged_s",
    "publish_s",
)


class ManifestError(ValueError):
    """A manifest or record that does not match its type (missing, unknown or mistyped keys)."""


def _check(cls: type[Any], data: Any) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``: no unknown, no missing keys."""
    if not isinstance(data, dict):
        raise ManifestError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ManifestError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    required = {
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - set(data)
    if missing:
        raise ManifestError(f"{cls.__name__}: missing keys {sorted(missing)}")
    return dict(data)


def _typed(name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ManifestError(f"{name}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise ManifestError(f"{name}: expected {kind}, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportManifest:
    """One exported version as serving needs it (``<version>/export.json``)."""

    architecture: str
    history_len: int  # history rows the model takes; ranking pads/truncates to it
    dim: int
    num_users: int  # embedding rows (row 0: padding / unknown)
    num_items: int
    users: int  # active user IDs in the version's ID table
    items: int  # active item IDs

    def __post_init__(self) -> None:
        _typed("architecture", self.architecture, str)
        for name in ("history_len", "dim", "num_users", "num_items", "users", "items"):
            _typed(name, getattr(self, name), int)
        if self.history_len < 1 or self.dim < 1:
            raise ManifestError("history_len and dim must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return cls(**_check(cls, data))

    def write(self, directory: Path) -> None:
        (directory / EXPORT_MANIFEST_FILE).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def read(cls, directory: Path) -> Self:
        try:
            return cls.from_json(json.loads((directory / EXPORT_MANIFEST_FILE).read_text()))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{directory / EXPORT_MANIFEST_FILE}: {exc}") from exc


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportTimings:
    """Where an export's freshness went: stream -> staged model -> served by Triton."""

    last_ingest_timestamp_ms: int  # Kafka timestamp of the newest message covered
    ready_at_ms: int  # when Triton first answered with this version
    freshness_s: float  # ingest of the newest covered event -> served
    staged_s: float  # ingest -> model.pt written by the learner
    publish_s: float  # staged -> served

    @classmethod
    def from_json(cls, data: Any) -> Self:
        values = _check(cls, data)
        for name in ("freshness_s", "staged_s", "publish_s"):
            values[name] = float(_typed(name, values[name], (int, float)))
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportRecord:
    """What publishing one version recorded: an entry of the repository's ``manifest.json``."""

    version: int
    model: ExportManifest
    events_covered: int  # events trained on, cumulative
    last_event_timestamp_ms: int  # newest event time the model has seen
    exported_at_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    timings: ExportTimings | None = None  # None: published without a Triton (or by a tool)
    offsets: dict[str, int] = dataclasses.field(default_factory=dict)  # "topic:partition"
    id_stats: dict[str, int] = dataclasses.field(default_factory=dict)
    served_by_triton: bool = False

    @property
    def architecture(self) -> str:
        return self.model.architecture

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        values = _check(cls, data)
        values["model"] = ExportManifest.from_json(values["model"])
        if values.get("timings") is not None:
            values["timings"] = ExportTimings.from_json(values["timings"])
        return cls(**values)

    @classmethod
    def from_stored_json(cls, data: Any) -> Self:
        """A record of ``manifest.json`` in either form: typed, or legacy (``from_legacy_json``)."""
        return cls.from_legacy_json(data) if is_legacy_record(data) else cls.from_json(data)

    @classmethod
    def from_legacy_json(cls, data: Any, *, model: ExportManifest | None = None) -> Self:
        """A legacy record (``extra`` dict) in the typed form; nothing it says is dropped.

        ``model``: the version's ``ExportManifest`` when known from its directory; else it is
        built from the record alone (``legacy_export_manifest``). ``ManifestError`` names what
        is missing when the record does not say enough."""
        if not isinstance(data, dict):
            raise ManifestError(f"legacy record: expected an object, got {type(data).__name__}")
        unknown = set(data) - _LEGACY_RECORD_KEYS
        if unknown:
            raise ManifestError(f"legacy record: unknown keys {sorted(unknown)}")
        extra = _legacy_extra(data)
        present = [name for name in _LEGACY_TIMINGS if name in extra]
        timings = None
        if present:  # all or nothing: the old writer always wrote the five together
            timings = ExportTimings.from_json({name: extra[name] for name in present})
        values: dict[str, Any] = {
            "version": _typed("version", data.get("version"), int),
            "model": model if model is not None else legacy_export_manifest(data),
            "events_covered": _typed("events_covered", data.get("events_covered"), int),
            "last_event_timestamp_ms": _typed(
                "last_event_timestamp_ms", data.get("last_event_timestamp_ms"), int
            ),
            "metrics": dict(_typed("metrics", data.get("metrics", {}), dict)),
            "timings": timings,
            "offsets": dict(_typed("extra.offsets", extra.get("offsets", {}), dict)),
            "id_stats": dict(_typed("extra.id_stats", extra.get("id_stats", {}), dict)),
            "served_by_triton": _typed(
                "extra.served_by_triton", extra.get("served_by_triton", False), bool
            ),
        }
        if "exported_at_ms" in data:
            values["exported_at_ms"] = _typed("exported_at_ms", data["exported_at_ms"], int)
        return cls(**values)


def is_legacy_record(data: Any) -> bool:
    """A ``manifest.json`` record as written before ``ExportManifest``: no ``model`` object,
    and the legacy ``extra`` dict or top-level ``architecture``."""
    return (
        isinstance(data, dict)
        and "model" not in data
        and bool({"extra", "architecture"} & set(data))
    )


def legacy_export_manifest(
    record: dict[str, Any], *, version_dir: dict[str, Any] | None = None
) -> ExportManifest:
    """The ``ExportManifest`` a legacy record describes.

    Sources, first present wins: the record's ``extra.model``, then its other fields
    (``architecture``, ``extra.history_len``, ``extra.id_stats``); ``version_dir``: what the
    version's own files say (its old ``ids.json``: ``architecture``, ``history_len``; and the
    ``users`` / ``items`` counts of its ID maps, which win over the record's statistics, since
    they are the tables ranking will read). ``ManifestError`` names every field not known."""
    extra = _legacy_extra(record)
    model = _typed("extra.model", extra.get("model", {}), dict)
    stats = _typed("extra.id_stats", extra.get("id_stats", {}), dict)
    files = version_dir or {}
    sources: dict[str, tuple[Any, ...]] = {
        "architecture": (
            model.get("architecture"),
            record.get("architecture"),
            files.get("architecture"),
        ),
        "history_len": (
            model.get("history_len"),
            extra.get("history_len"),
            files.get("history_len"),
        ),
        "dim": (model.get("dim"),),
        "num_users": (model.get("num_users"),),
        "num_items": (model.get("num_items"),),
        "users": (files.get("users"), stats.get("users_known")),
        "items": (files.get("items"), stats.get("items_known")),
    }
    values: dict[str, Any] = {
        name: next((value for value in options if value is not None), None)
        for name, options in sources.items()
    }
    unknown = sorted(name for name, value in values.items() if value is None)
    if unknown:
        version = record.get("version")
        raise ManifestError(f"legacy record of version {version}: no value for {unknown}")
    return ExportManifest.from_json(values)  # checks the types too


def _legacy_extra(record: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = _typed("extra", record.get("extra", {}), dict)
    return extra
