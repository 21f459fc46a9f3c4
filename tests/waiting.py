"""Waiting on progress, not on the clock: poll a condition until it holds, under a generous
deadline (the machine may be busy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 90.0, interval: float = 0.1
) -> float:
    """Seconds until ``predicate`` held; ``TimeoutError`` only after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise TimeoutError("condition not reached")
