"""Waiting on progress, not on the clock: poll a condition until it holds, under a generous
deadline (the machine may be busy)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that.

    A check may also assert: its ``AssertionError`` means "not yet", and the last one is
    raised when ``timeout`` runs out (it says what was still wrong)."""
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last is not None:
        raise last
    raise TimeoutError(f"condition not reached within {timeout}s")
