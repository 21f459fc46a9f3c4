import numpy as np

from freshrank.model.history import UserHistories


def test_each_event_sees_only_earlier_events_newest_first() -> None:
    histories = UserHistories(num_users=4, length=3)
    users = np.array([1, 1, 2, 1, 1])
    items = np.array([10, 11, 20, 12, 13])
    seen = histories.before_each(users, items)
    assert seen.tolist() == [
        [0, 0, 0],
        [10, 0, 0],
        [0, 0, 0],
        [11, 10, 0],
        [12, 11, 10],
    ]
    assert histories.get(np.array([1, 2, 0])).tolist() == [[13, 12, 11], [20, 0, 0], [0, 0, 0]]


def test_unknown_users_and_evicted_items_leave_no_trace() -> None:
    histories = UserHistories(num_users=3, length=3)
    histories.before_each(np.array([0, 1, 1, 1]), np.array([5, 7, 8, 9]))
    assert histories.get(np.array([0])).tolist() == [[0, 0, 0]]
    histories.drop_items([8])
    assert histories.get(np.array([1])).tolist() == [[9, 7, 0]]
    histories.reset_users([1])
    assert histories.get(np.array([1])).tolist() == [[0, 0, 0]]
