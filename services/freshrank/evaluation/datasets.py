"""The streams ``freshrank eval`` replays: a file, a named shortcut, or a drifting synthetic one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from freshrank.core.codec import InteractionEvent
from freshrank.sim.files import SHORTCUTS, FileFormat, file_events, resolve_source
from freshrank.sim.movielens import default_ml100k_path, movielens_events
from freshrank.sim.synthetic import SyntheticConfig, SyntheticStream

__all__ = ["DATASETS", "Dataset", "load_dataset"]

SYNTHETIC = SyntheticConfig(users=1000, items=500, topics=10, events=60_000, drift_at=0.5)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    events: list[InteractionEvent]
    drift_index: int | None = None  # first event after a planted drift

    @property
    def users(self) -> int:
        return len({e.user_id for e in self.events})

    @property
    def items(self) -> int:
        return len({e.item_id for e in self.events})


def _ml100k(limit: int | None, directory: Path | None = None) -> Dataset:
    path = directory / "ml-100k" / "u.data" if directory else default_ml100k_path()
    return Dataset("ml-100k", list(movielens_events(path, limit=limit)))


def _synthetic(limit: int | None, directory: Path | None = None) -> Dataset:
    config = SYNTHETIC
    if limit is not None:
        # A shorter stream keeps its drift at the same fraction, so --limit still shows it.
        config = dataclasses.replace(config, events=min(limit, config.events))
    stream = SyntheticStream(config)
    return Dataset("synthetic", list(stream.events()), drift_index=stream.drift_index)


DATASETS: dict[str, Callable[[int | None, Path | None], Dataset]] = {
    "ml-100k": _ml100k,
    "synthetic": _synthetic,
}


def load_dataset(
    name: str,
    limit: int | None = None,
    *,
    fmt: FileFormat | None = None,
    data_dir: Path | None = None,
) -> Dataset:
    """A named stream (ml-100k, synthetic, a file shortcut) or any interaction file's path."""
    if name in DATASETS:
        return DATASETS[name](limit, data_dir)
    if name not in SHORTCUTS and not Path(name).exists():
        known = ", ".join([*DATASETS, *SHORTCUTS])
        raise ValueError(f"unknown dataset {name!r}: not a file, nor one of {known}")
    path, default_fmt = resolve_source(name, data_dir)
    label = name if name in SHORTCUTS else path.stem
    return Dataset(label, list(file_events(path, fmt or default_fmt, limit)))
