from __future__ import annotations

from collections import Counter

import pytest

from freshrank.core.codec import decode_event, encode_event
from freshrank.sim import SyntheticConfig, SyntheticStream, default_ml100k_path, movielens_events


def test_same_seed_same_events() -> None:
    config = SyntheticConfig(users=50, items=40, events=500)
    first = [e.SerializeToString() for e in SyntheticStream(config).events()]
    second = [e.SerializeToString() for e in SyntheticStream(config).events()]
    assert first == second
    assert all(decode_event(encode_event(e)) == e for e in SyntheticStream(config).events())


def test_users_follow_their_planted_taste_until_the_drift() -> None:
    config = SyntheticConfig(users=20, items=200, topics=10, events=20_000, drift_at=0.5)
    stream = SyntheticStream(config)
    before: Counter[bool] = Counter()
    after: Counter[bool] = Counter()
    for index, event in enumerate(stream.events()):
        user, item = int(event.user_id[1:]), int(event.item_id[1:])
        drifted = index >= stream.drift_index
        in_taste = int(stream.item_topic[item]) in stream.taste(user, drifted=drifted)
        (after if drifted else before)[in_taste] += 1
    # 90% of picks come from the two taste topics (plus popular picks that land there)
    assert before[True] / sum(before.values()) > 0.85
    assert after[True] / sum(after.values()) > 0.85
    assert stream.taste(0, drifted=False) != stream.taste(0, drifted=True)


def test_ground_truth_items_are_in_the_users_taste() -> None:
    stream = SyntheticStream(SyntheticConfig(users=10, items=300, topics=10))
    topics = stream.taste(3, drifted=False)
    top = stream.top_items(3, 5, drifted=False)
    assert all(int(stream.item_topic[int(i[1:])]) in topics for i in top)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="drift_at"):
        SyntheticConfig(drift_at=1.5)


def test_movielens_replays_in_time_order() -> None:
    try:
        default_ml100k_path()
    except FileNotFoundError:
        pytest.skip("MovieLens-100K not beside this checkout (../shared/data/ml-100k)")
    events = list(movielens_events(limit=2000))
    assert len(events) == 2000
    stamps = [e.timestamp_ms for e in events]
    assert stamps == sorted(stamps)
    assert all(1 <= e.value <= 5 and e.type == 5 for e in events)
