"""MovieLens-100K as a time-ordered event stream, read from where it lies (never copied).

Its terms forbid redistribution, so the path points into ``../shared/data/ml-100k``; each
rating becomes a RATING event with the rating as ``value``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from freshrank.core.codec import EventType, InteractionEvent

__all__ = ["DatasetNotFound", "default_ml100k_path", "movielens_events"]

ENV_VAR = "FRESHRANK_ML100K_PATH"


class DatasetNotFound(FileNotFoundError):
    pass


def default_ml100k_path() -> Path:
    """``$FRESHRANK_ML100K_PATH``, else ``shared/data/ml-100k/u.data`` beside a parent dir."""
    if ENV_VAR in os.environ:
        return Path(os.environ[ENV_VAR])
    starts = [Path.cwd(), Path(__file__).resolve()]
    for start in starts:
        for parent in [start, *start.parents]:
            candidate = parent / "shared" / "data" / "ml-100k" / "u.data"
            if candidate.is_file():
                return candidate
    raise DatasetNotFound(
        f"MovieLens-100K u.data not found beside this checkout; set {ENV_VAR} to its path"
    )


def movielens_events(
    path: Path | None = None, limit: int | None = None
) -> Iterator[InteractionEvent]:
    """Ratings in timestamp order (ties keep file order), as RATING events."""
    source = path or default_ml100k_path()
    rows: list[tuple[int, int, str, str, int]] = []
    with source.open() as handle:
        for line_no, line in enumerate(handle):
            user, item, rating, seconds = line.split("\t")
            rows.append((int(seconds), line_no, user, item, int(rating)))
    rows.sort()
    for ts, index, user_id, item_id, stars in rows[:limit]:
        yield InteractionEvent(
            event_id=f"ml100k-{index}",
            user_id=f"u{user_id}",
            item_id=f"i{item_id}",
            type=EventType.RATING,
            value=float(stars),
            timestamp_ms=ts * 1000,
        )
