"""The model-served share that `make demo` and `freshrank bench ranking` both report."""

from __future__ import annotations

import math

from freshrank.bench.report import model_served


def test_fallbacks_before_the_first_model_are_apart_and_later_ones_count_against() -> None:
    split = model_served([False, False, True, True, False, True])
    assert (split.before_first_model, split.after_first_model, split.fallbacks_after) == (2, 4, 1)
    assert split.share == 0.75


def test_no_model_ever_has_no_share() -> None:
    split = model_served([False, False])
    assert (split.before_first_model, split.after_first_model) == (2, 0)
    assert math.isnan(split.share)
