"""The streams ``freshrank eval`` replays: MovieLens-100K in time order, or a drifting one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from freshrank.core.codec import InteractionEvent
from freshrank.sim.movielens import movielens_events
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


def _ml100k(limit: int | None) -> Dataset:
    return Dataset("ml-100k", list(movielens_events(limit=limit)))


def _synthetic(limit: int | None) -> Dataset:
    config = SYNTHETIC
    if limit is not None:
        # A shorter stream keeps its drift at the same fraction, so --limit still shows it.
        config = dataclasses.replace(config, events=min(limit, config.events))
    stream = SyntheticStream(config)
    return Dataset("synthetic", list(stream.events()), drift_index=stream.drift_index)


DATASETS: dict[str, Callable[[int | None], Dataset]] = {
    "ml-100k": _ml100k,
    "synthetic": _synthetic,
}


def load_dataset(name: str, limit: int | None = None) -> Dataset:
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})") from None
    return loader(limit)
