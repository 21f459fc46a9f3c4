import math

import numpy as np
import pytest

from freshrank.model.metrics import RollingMetrics, hit_rate_at_k, ndcg_at_k, ranks_of_true


def test_ranks_count_ties_against_the_true_item() -> None:
    true = np.array([0.5, 0.5, 2.0])
    others = np.array([[0.1, 0.9, 0.5], [0.6, 0.7, 0.8], [1.0, 1.0, 1.0]])
    assert ranks_of_true(true, others).tolist() == [2, 3, 0]


def test_ranks_ignore_masked_slots() -> None:
    true = np.array([0.5])
    others = np.array([[0.9, 0.9, 0.1]])
    valid = np.array([[True, False, True]])
    assert ranks_of_true(true, others, valid).tolist() == [1]


def test_hit_rate_and_ndcg_by_hand() -> None:
    ranks = np.array([0, 1, 9, 10, 50])
    assert hit_rate_at_k(ranks, 10).tolist() == [1, 1, 1, 0, 0]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0]
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)


def test_rolling_window_drops_old_batches_and_total_keeps_all() -> None:
    metrics = RollingMetrics(window=10)
    for hits in (10.0, 0.0, 0.0):  # three batches of 10 events
        metrics.add(
            hits=hits, ndcg=hits / 2, events=10, hits_full=0, ndcg_full=0, full_events=0, loss=1.0
        )
    assert metrics.rolling["hr@10"] == 0.0
    assert metrics.rolling["events"] == 10
    assert metrics.total["hr@10"] == pytest.approx(1 / 3)
    assert math.isnan(metrics.total["hr@10_full"])
    restored = RollingMetrics()
    restored.load_state_dict(metrics.state_dict())
    assert restored.rolling == metrics.rolling
    assert restored.total == metrics.total
