"""Fixtures of the ranking tests (helpers live in ranking_support)."""

from __future__ import annotations

import pytest
from ranking_support import WORLD, TrainedModel, train_learner

from freshrank.sim import SyntheticStream


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    return train_learner(SyntheticStream(WORLD), tmp_path_factory.mktemp("snapshot"))
