"""The schedule every request benchmark drives its load with: open loop or closed loop.

Open loop (``rate`` > 0): request ``n`` is due at ``start + n / rate`` whatever happened to the
earlier ones, and ``send`` gets that due time, so a latency measured from it counts queueing
(no coordinated omission). Closed loop (``rate`` == 0): ``concurrency`` workers send back to
back, each request due when it is sent: this measures throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Send", "drive"]

Send = Callable[[float], Coroutine[Any, Any, None]]  # takes the request's due time (perf_counter)


async def drive(send: Send, *, duration: float, rate: float, concurrency: int) -> float:
    """Send for ``duration`` seconds; returns the perf_counter time the load started."""
    start = time.perf_counter()
    end = start + duration
    if rate > 0:
        in_flight: set[asyncio.Task[None]] = set()  # only those still running: a small set
        interval = 1.0 / rate
        sent = 0
        while (due := start + sent * interval) < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.gather(*in_flight)
    else:

        async def worker() -> None:
            while time.perf_counter() < end:
                await send(time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return start
