"""Event sources: a synthetic stream with planted structure, and dataset replays."""

from freshrank.sim.movielens import default_ml100k_path, movielens_events
from freshrank.sim.replay import replay
from freshrank.sim.synthetic import SyntheticConfig, SyntheticStream

__all__ = [
    "SyntheticConfig",
    "SyntheticStream",
    "default_ml100k_path",
    "movielens_events",
    "replay",
]
