"""The read circuit breaker's state machine, on a hand-driven clock."""

from __future__ import annotations

import pytest

from freshrank.feature.breaker import CircuitBreaker, StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_fails_fast_with_retry_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, first_open_s=0.5, max_open_s=4.0, clock=clock)
    for _ in range(2):
        assert breaker.acquire() is False
        breaker.failure(trial=False)
    assert not breaker.is_open
    breaker.acquire()
    breaker.success()  # a success in between resets the count
    for _ in range(3):
        breaker.acquire()
        breaker.failure(trial=False)
    assert breaker.is_open
    assert breaker.opened == 1
    with pytest.raises(StoreUnavailable) as refused:
        breaker.acquire()
    assert refused.value.retry_after_s == 1  # whole seconds, at least 1


def test_one_trial_after_the_cool_down_which_doubles_while_the_outage_lasts() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, first_open_s=0.5, max_open_s=1.5, clock=clock)
    breaker.acquire()
    breaker.failure(trial=False)
    for expected_open_s in (1.0, 1.5, 1.5):  # doubled, capped
        clock.now += 10
        assert breaker.acquire() is True  # the trial
        with pytest.raises(StoreUnavailable):
            breaker.acquire()  # everyone else still fails fast meanwhile
        breaker.failure(trial=True)
        assert breaker.retry_after_s() == pytest.approx(expected_open_s)
    clock.now += 10
    assert breaker.acquire() is True
    breaker.success()
    assert not breaker.is_open
    assert breaker.acquire() is False


def test_a_trial_ending_without_a_verdict_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.acquire()
    breaker.failure(trial=False)
    clock.now += 10
    assert breaker.acquire() is True
    breaker.release(trial=True)  # e.g. a bad request: says nothing about the store
    assert breaker.acquire() is True
