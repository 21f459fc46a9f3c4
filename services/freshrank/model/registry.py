"""Architectures by name: the trainer, exporter and ``freshrank eval`` build models here."""

from __future__ import annotations

from collections.abc import Callable

from freshrank.model.base import ModelConfig, RankingModel
from freshrank.model.din import DeepInterestNetwork
from freshrank.model.mf import MatrixFactorization
from freshrank.model.sasrec import SelfAttentiveSequential

__all__ = ["ARCHITECTURES", "LEARNER_DEFAULTS", "build_model"]

ARCHITECTURES: dict[str, Callable[[ModelConfig], RankingModel]] = {
    "mf": MatrixFactorization,
    "din": DeepInterestNetwork,
    "sasrec": SelfAttentiveSequential,
}


# Learner settings an architecture trains with unless told otherwise (trainer and eval alike),
# the same on every stream. The sequence model's score is a dot product, so it affords a
# sampled softmax over many uniform negatives per event (uniform proposals: the logQ
# correction is a constant and drops out), eight times MF's and DIN's.
LEARNER_DEFAULTS: dict[str, dict[str, object]] = {
    "sasrec": {"train_negatives": 128},
}


def build_model(config: ModelConfig) -> RankingModel:
    try:
        factory = ARCHITECTURES[config.architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {config.architecture!r} (known: {known})") from None
    return factory(config)
