"""Architectures by name: the trainer, exporter and ``freshrank eval`` build models here."""

from __future__ import annotations

from collections.abc import Callable

from freshrank.model.base import ModelConfig, RankingModel
from freshrank.model.din import DeepInterestNetwork
from freshrank.model.mf import MatrixFactorization

__all__ = ["ARCHITECTURES", "build_model"]

ARCHITECTURES: dict[str, Callable[[ModelConfig], RankingModel]] = {
    "mf": MatrixFactorization,
    "din": DeepInterestNetwork,
}


def build_model(config: ModelConfig) -> RankingModel:
    try:
        factory = ARCHITECTURES[config.architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {config.architecture!r} (known: {known})") from None
    return factory(config)
