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


def test_same_timestamp_events_are_simultaneous_within_and_across_batches() -> None:
    histories = UserHistories(num_users=4, length=4)
    users = np.array([1, 1, 2, 1, 1])
    items = np.array([10, 11, 20, 12, 13])
    times = np.array([5, 5, 5, 6, 6])
    seen = histories.before_each(users, items, times)
    # 10 and 11 happened together: neither is history for the other; 12 and 13 see both.
    assert seen.tolist() == [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [11, 10, 0, 0],
        [11, 10, 0, 0],
    ]
    # A tie that straddles micro-batches: another event at time 6 still sees only 10 and 11.
    later = histories.before_each(np.array([1, 1]), np.array([14, 15]), np.array([6, 7]))
    assert later.tolist() == [[11, 10, 0, 0], [14, 13, 12, 11]]


def test_file_order_inside_a_batch_does_not_matter_only_time_does() -> None:
    forward, backward = UserHistories(3, 3), UserHistories(3, 3)
    users, items, times = np.array([1, 1, 1]), np.array([7, 8, 9]), np.array([1, 2, 3])
    a = forward.before_each(users, items, times)
    b = backward.before_each(users[::-1].copy(), items[::-1].copy(), times[::-1].copy())
    assert a.tolist() == b[::-1].tolist()
    assert forward.table.tolist() == backward.table.tolist()
