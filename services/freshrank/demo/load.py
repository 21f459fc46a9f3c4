"""A bounded open-loop load generator for the ranking API: latencies, fallbacks, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Sequence

import aiohttp

from freshrank.core.contracts import routes

__all__ = ["LoadResult", "RankLoad"]


@dataclasses.dataclass
class LoadResult:
    started: float = dataclasses.field(default_factory=time.monotonic)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    timeline: list[tuple[float, float, bool]] = dataclasses.field(default_factory=list)
    fallbacks: int = 0
    errors: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)
    versions_served: set[int] = dataclasses.field(default_factory=set)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors


class RankLoad:
    """Sends ``rate`` requests/s for random users until stopped (or ``max_requests``)."""

    def __init__(
        self,
        url: str,
        users: Sequence[str],
        *,
        rate: float = 20.0,
        k: int = 10,
        max_requests: int = 100_000,
        seed: int = 3,
    ) -> None:
        self.url = url.rstrip("/") + routes.RANK
        self.users = list(users)
        self.rate = rate
        self.k = k
        self.max_requests = max_requests
        self.result = LoadResult()
        self._random = random.Random(seed)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> LoadResult:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            for sent in range(self.max_requests):
                if self._stop.is_set():
                    break
                delay = start + sent / self.rate - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                task = asyncio.create_task(self._one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        return self.result

    async def _one(self, session: aiohttp.ClientSession) -> None:
        body = {"user_id": self._random.choice(self.users), "k": self.k}
        start = time.perf_counter()
        try:
            async with session.post(self.url, json=body) as response:
                payload = await response.json()
                if response.status != 200:
                    self._error(f"HTTP {response.status}: {payload}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._error(f"{type(exc).__name__}: {exc}")
            return
        latency = (time.perf_counter() - start) * 1000
        fallback = bool(payload.get("fallback"))
        self.result.latencies_ms.append(latency)
        self.result.timeline.append((time.monotonic() - self.result.started, latency, fallback))
        self.result.fallbacks += fallback
        version = int(payload.get("model_version", 0))  # int64: a decimal string in JSON
        if version:
            self.result.versions_served.add(version)

    def _error(self, message: str) -> None:
        self.result.errors += 1
        if len(self.result.error_samples) < 5:
            self.result.error_samples.append(message)
