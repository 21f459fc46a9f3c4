"""Any interaction file as a time-ordered event stream: CSV/TSV with a header row.

The header names a user, an item and a time column (found by common names, or given).
Rows are sorted by time with a stable tie-break (file order), so the stream is the same on
every run; same-timestamp events stay ties (the learner treats them as simultaneous). Data
is read from where it lies, never copied into the repository.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

from freshrank.core.codec import EventType, InteractionEvent

__all__ = [
    "DATA_DIR_ENV",
    "SHORTCUTS",
    "DatasetNotFound",
    "FileFormat",
    "data_dir",
    "file_events",
    "resolve_source",
]

DATA_DIR_ENV = "FRESHRANK_DATA_DIR"
TIME_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
USER_COLUMNS = ("user_id", "userid", "user", "uid", "visitorid", "customer_id", "reviewerid")
ITEM_COLUMNS = ("item_id", "itemid", "item", "iid", "movieid", "product_id", "asin", "sku")
TIME_COLUMNS = ("time", "timestamp", "ts", "event_time", "datetime", "date", "unixreviewtime")
_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


class DatasetNotFound(FileNotFoundError):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileFormat:
    separator: str | None = None  # None: tab for .tsv/.txt, comma for .csv, else sniffed
    user_column: str | None = None  # None: the first of USER_COLUMNS in the header
    item_column: str | None = None
    time_column: str | None = None
    time_unit: str = "auto"  # auto: by magnitude (s/ms/us/ns), ISO 8601 if not a number

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time unit must be one of {TIME_UNITS}, not {self.time_unit!r}")


# name -> (path under the data dir, its format)
SHORTCUTS: dict[str, tuple[str, FileFormat]] = {
    "amazon-beauty": ("amazon-beauty/interactions.tsv", FileFormat()),
}


def data_dir() -> Path:
    """``$FRESHRANK_DATA_DIR``, else the ``shared/data`` beside a parent of cwd or this file."""
    if DATA_DIR_ENV in os.environ:
        return Path(os.environ[DATA_DIR_ENV])
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise DatasetNotFound(f"no shared/data directory beside this checkout; set {DATA_DIR_ENV}")


def resolve_source(name_or_path: str, directory: Path | None = None) -> tuple[Path, FileFormat]:
    """A shortcut's file under the data dir, or the path itself."""
    if name_or_path in SHORTCUTS:
        relative, fmt = SHORTCUTS[name_or_path]
        path = (directory or data_dir()) / relative
    else:
        path, fmt = Path(name_or_path), FileFormat()
    if not path.is_file():
        raise DatasetNotFound(f"interaction file {path} not found")
    return path, fmt


def file_events(
    path: Path, fmt: FileFormat | None = None, limit: int | None = None
) -> Iterator[InteractionEvent]:
    """The file's interactions in time order (ties keep file order), as VIEW events.

    The file is read and checked here (bad input raises ``ValueError`` at once, before any
    event is produced); the events are built as they are consumed.
    """
    rows = _read_rows(path, fmt or FileFormat())
    rows.sort(key=lambda row: (row[0], row[1]))
    return _events(rows[:limit], path.stem)


def _events(rows: list[tuple[int, int, str, str]], prefix: str) -> Iterator[InteractionEvent]:
    for ts, line, user_id, item_id in rows:
        yield InteractionEvent(
            event_id=f"{prefix}-{line}",
            user_id=user_id,
            item_id=item_id,
            type=EventType.VIEW,
            value=1.0,
            timestamp_ms=ts,
        )


def _read_rows(path: Path, fmt: FileFormat) -> list[tuple[int, int, str, str]]:
    # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        separator = fmt.separator or _separator(path, handle.readline())
        handle.seek(0)
        reader = csv.reader(handle, delimiter=separator)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise ValueError(f"{path}: empty file, expected a header row")
        columns = (
            _column(header, fmt.user_column, USER_COLUMNS, "user", path),
            _column(header, fmt.item_column, ITEM_COLUMNS, "item", path),
            _column(header, fmt.time_column, TIME_COLUMNS, "time", path),
        )
        raw = [
            (line, *_fields(row, columns, len(header), path, line))
            for line, row in enumerate(reader, start=2)
            if row
        ]
    unit = fmt.time_unit if fmt.time_unit != "auto" else _guess_unit(raw, path)
    rows = []
    for line, user_id, item_id, stamp in raw:
        try:
            rows.append((_to_ms(stamp, unit), line, user_id, item_id))
        except ValueError as error:
            raise ValueError(f"{path}:{line}: {error}") from None
    return rows


def _fields(
    row: list[str], columns: tuple[int, int, int], width: int, path: Path, line: int
) -> tuple[str, str, str]:
    """(user, item, time) of one data row; a short row or an empty field names its line."""
    if len(row) <= max(columns):
        raise ValueError(f"{path}:{line}: {len(row)} fields where the header has {width}")
    user_id, item_id, stamp = (row[column].strip() for column in columns)
    for value, what in ((user_id, "user"), (item_id, "item"), (stamp, "time")):
        if not value:
            raise ValueError(f"{path}:{line}: empty {what}")
    return user_id, item_id, stamp


def _separator(path: Path, first_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab", ".txt"):
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    return csv.Sniffer().sniff(first_line, delimiters=",\t;|").delimiter


def _column(
    header: list[str], given: str | None, known: tuple[str, ...], what: str, path: Path
) -> int:
    if given is not None:
        if given not in header:
            raise ValueError(f"{path}: no {what} column {given!r} in header {header}")
        return header.index(given)
    lowered = [name.lower() for name in header]
    for name in known:
        if name in lowered:
            return lowered.index(name)
    raise ValueError(f"{path}: no {what} column in header {header}; name it with a flag")


def _guess_unit(raw: list[tuple[int, str, str, str]], path: Path) -> str:
    if not raw:
        return "s"
    try:
        magnitude = max(abs(float(stamp)) for _, _, _, stamp in raw[:1000])
    except ValueError:
        return "iso"
    if magnitude > 1e17:
        return "ns"
    if magnitude > 1e14:
        return "us"
    return "ms" if magnitude > 1e11 else "s"


def _to_ms(stamp: str, unit: str) -> int:
    if unit == "iso":
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return int(moment.timestamp() * 1000)
    try:
        return round(float(stamp) * _MS_PER_UNIT[unit])
    except ValueError:
        raise ValueError(f"time {stamp!r} is not a number of {unit}") from None
