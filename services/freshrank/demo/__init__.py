"""``freshrank demo``: the whole product locally, with a live view and a checked report."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from freshrank.core.codec import InteractionEvent
from freshrank.core.contracts.quality import QualityMetric
from freshrank.demo.run import DemoConfig, run_demo

__all__ = ["DEMO_TABLE_ROWS", "DemoConfig", "popularity_hr_at_10", "run_demo", "stream_for"]

# Embedding rows the demo's trainer allocates (and the baseline mirrors): ample for both datasets.
DEMO_TABLE_ROWS = 4096
_BATCH = 256  # the trainer's micro-batch size


def stream_for(config: DemoConfig) -> tuple[Callable[[], Iterable[InteractionEvent]], list[str]]:
    """A re-iterable event source for the dataset, and the user ids to send requests for."""
    from freshrank.sim import SyntheticConfig, SyntheticStream, movielens_events

    if config.dataset == "ml-100k":
        events = list(movielens_events(limit=config.events))
        users = sorted({e.user_id for e in events})
        return (lambda: events), users
    synthetic = SyntheticStream(
        SyntheticConfig(users=400, items=300, topics=10, events=config.events, drift_at=0.6)
    )
    users = [synthetic.user_id(u) for u in range(synthetic.config.users)]
    return synthetic.events, users


def popularity_hr_at_10(events: Iterable[InteractionEvent]) -> float:
    """The popularity baseline's rolling HR@10 through the trainer's own prequential loop."""
    from freshrank.model import ModelConfig
    from freshrank.model.baselines import PopularityLearner
    from freshrank.model.learner import LearnerConfig

    model = ModelConfig(architecture="mf", num_users=DEMO_TABLE_ROWS, num_items=DEMO_TABLE_ROWS)
    learner = PopularityLearner(LearnerConfig(model=model, device="cpu"))
    batch: list[InteractionEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) == _BATCH:
            learner.step(batch)
            batch = []
    if batch:
        learner.step(batch)
    return float(learner.rolling[QualityMetric.HR_AT_10])
