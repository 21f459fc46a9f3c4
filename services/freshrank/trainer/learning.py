"""The slice of ``freshrank.model.learner`` the trainer service uses, and how it is built.

The service depends on this protocol, not on a concrete learner, so the Kafka loop can be
driven by any object with the agreed interface (the in-memory benchmark uses the same one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from freshrank.core.codec import InteractionEvent
from freshrank.core.contracts.quality import QualityMetric
from freshrank.trainer.settings import TrainerSettings

__all__ = ["Learner", "StepResult", "build_learner", "metric_of"]


class StepResult(Protocol):
    @property
    def events(self) -> int: ...
    @property
    def hr10(self) -> float: ...
    @property
    def ndcg10(self) -> float: ...
    @property
    def loss(self) -> float: ...


class Learner(Protocol):
    events_trained: int
    last_event_timestamp_ms: int

    def step(self, events: Sequence[InteractionEvent]) -> Any: ...
    def evaluate_only(self, events: Sequence[InteractionEvent]) -> Any: ...
    @property
    def rolling(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def export(self, directory: Path) -> None: ...
    def id_stats(self) -> dict[str, int]: ...
    def model_stats(self) -> dict[str, float]: ...


def metric_of(step: Any, name: str) -> float:
    """One metric of a StepMetrics by its rolling name (``ndcg@10`` -> ``ndcg10``)."""
    return float(getattr(step, QualityMetric(name).step_field))


def learner_config(settings: TrainerSettings) -> Any:
    from freshrank.model import ModelConfig
    from freshrank.model.learner import LearnerConfig
    from freshrank.model.registry import LEARNER_DEFAULTS

    # The architecture's own learner settings (as `freshrank eval` measured them), then flags.
    overrides: dict[str, Any] = dict(LEARNER_DEFAULTS.get(settings.architecture, {}))
    if settings.learning_rate > 0:
        overrides["learning_rate"] = settings.learning_rate
    if settings.sparse_learning_rate > 0:
        overrides["sparse_learning_rate"] = settings.sparse_learning_rate
    model = ModelConfig.from_settings(settings)
    return LearnerConfig(model=model, device=settings.device, seed=settings.seed, **overrides)


def build_learner(settings: TrainerSettings) -> Learner:
    from freshrank.model.learner import OnlineLearner

    learner: Learner = OnlineLearner(learner_config(settings))
    return learner
