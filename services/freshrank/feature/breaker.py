"""A circuit breaker for the feature store's reads: fail fast while the database is down.

Without it every request during an outage pays for a connection attempt (and SQLAlchemy's and
psycopg's error paths: 11-13 ms of CPU against 4 ms for a good read), the one event loop
saturates and healthy endpoints (``/readyz``, cached reads) queue behind failing ones for
seconds. With it, after ``failure_threshold`` consecutive outage errors reads are refused at
once (``StoreUnavailable``, which the API answers with 503 and ``Retry-After``) for a cool-down
that doubles up to ``max_open_s`` while the outage lasts. When the cool-down ends one caller is
let through as a trial (the others still fail fast); its success closes the breaker, as does
any successful write (the ingester retries on its own schedule).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store is known to be down: refused without trying. ``retry_after_s`` is when the
    next trial may go through (whole seconds, at least 1, for ``Retry-After``)."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"feature store unavailable, retry in {self.retry_after_s} s")


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        first_open_s: float = 0.5,
        max_open_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.first_open_s = first_open_s
        self.max_open_s = max_open_s
        self._clock = clock
        self._failures = 0  # consecutive
        self._open_s = 0.0  # current cool-down; 0 while closed
        self._open_until = 0.0
        self._trial = False  # a trial call is in flight (half-open)
        self.opened = 0  # times it opened (metrics, tests)

    @property
    def is_open(self) -> bool:
        """Open or half-open: the store is believed down."""
        return self._open_s > 0

    def retry_after_s(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def acquire(self) -> bool:
        """Before a call: raise ``StoreUnavailable`` unless it may go through. Returns whether
        the call is the trial (the caller must then report its outcome, whatever happens)."""
        if self._open_s == 0:
            return False
        if self._trial or self._clock() < self._open_until:
            raise StoreUnavailable(self.retry_after_s() or self._open_s)
        self._trial = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_s = 0.0
        self._trial = False

    def failure(self, trial: bool) -> None:
        """An outage error (or a timeout) from a call that went through."""
        if trial:
            self._trial = False
            self._reopen(min(self._open_s * 2, self.max_open_s))
            return
        self._failures += 1
        if self._open_s == 0 and self._failures >= self.failure_threshold:
            self.opened += 1
            self._reopen(self.first_open_s)

    def release(self, trial: bool) -> None:
        """A call that ended neither in success nor in an outage error (e.g. bad input)."""
        if trial:
            self._trial = False

    def _reopen(self, seconds: float) -> None:
        self._open_s = seconds
        self._open_until = self._clock() + seconds
