"""A bounded, TTL'd, in-process read-through cache, invalidated by the ingest stream.

LRU eviction bounds memory; the TTL bounds staleness for changes this process did not ingest
(another replica's partitions). A read that started before an invalidation must not put its
(possibly stale) value back: ``put`` takes the generation seen when the read started.

``ReadThrough`` keeps the store from seeing bursts (the feature benchmark's p99 of about a
second at 500 req/s was exactly that: entries stored together expired together, and every
request in the next few milliseconds went to SQL for the same keys at once, queueing on the
connection pool until requests timed out):

- refresh ahead: each entry comes due for refresh at a random point between
  ``REFRESH_FROM`` and ``REFRESH_TO`` of its TTL. A read of a due entry is still served from
  the cache and queues the key; queued keys are loaded together, one load per short window,
  well before the entry expires. Hot keys never expire, and entries stored together drift
  apart instead of coming due together again.
- single flight: a miss joins a load of the same key already in flight (one that started
  after the last invalidation) instead of issuing its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["REFRESH_FROM", "REFRESH_TO", "Loader", "ReadThrough", "TTLCache"]

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Loader = Callable[[list[K]], Awaitable[dict[K, V]]]

# Entries come due for refresh between these fractions of the TTL: late enough that a key is
# reloaded at most about twice per TTL, early enough that the refresh lands before expiry.
REFRESH_FROM = 0.5
REFRESH_TO = 0.8
# Longest a due key waits for its refresh (capped by a fraction of the TTL): keys coming due
# within this window are loaded by one query.
REFRESH_WINDOW_S = 0.05


class TTLCache(Generic[K, V]):
    def __init__(
        self,
        max_size: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._clock = clock
        self._jitter = jitter
        # key -> (expires at, due for refresh at, value)
        self._entries: OrderedDict[K, tuple[float, float, V]] = OrderedDict()
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self.peek(key)
        return None if found is None else found[0]

    def peek(self, key: K) -> tuple[V, bool] | None:
        """The live value and whether it is due for refresh; ``None`` when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        now = self._clock()
        if entry[0] < now:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[2], entry[1] <= now

    def peek_many(self, keys: Iterable[K]) -> tuple[list[V | None], list[K], list[K]]:
        """``peek`` for a batch, in one pass (the hot path of every read): the live values
        (``None`` where missing), the missing keys, and the keys due for refresh."""
        entries = self._entries
        now = self._clock()
        touch = entries.move_to_end
        values: list[V | None] = []
        missing: list[K] = []
        due: list[K] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None or entry[0] < now:
                if entry is not None:
                    del entries[key]
                missing.append(key)
                values.append(None)
                continue
            touch(key)
            values.append(entry[2])
            if entry[1] <= now:
                due.append(key)
        self.misses += len(missing)
        self.hits += len(values) - len(missing)
        return values, missing, due

    def put(self, key: K, value: V, generation: int | None = None) -> None:
        """Store ``value`` unless an invalidation happened since ``generation`` was read."""
        if self.max_size <= 0 or (generation is not None and generation != self.generation):
            return
        now = self._clock()
        due = now + self.ttl_s * (REFRESH_FROM + (REFRESH_TO - REFRESH_FROM) * self._jitter())
        self._entries[key] = (now + self.ttl_s, due, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def invalidate(self, keys: Iterable[K]) -> None:
        self.generation += 1
        for key in keys:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class ReadThrough(Generic[K, V]):
    """Reads through ``cache`` with single-flight loads and coalesced refresh-ahead.

    A loader takes a list of distinct keys and returns a value for every one of them (a
    cold-start value for unknown ids); a given key is always read with the same loader. With
    ``cache.max_size == 0`` (cache off) every read calls its loader directly: no sharing
    between requests.
    """

    def __init__(self, cache: TTLCache[K, V], *, load_timeout_s: float) -> None:
        self.cache = cache
        self.load_timeout_s = load_timeout_s
        self.refresh_window_s = min(REFRESH_WINDOW_S, cache.ttl_s * (1 - REFRESH_TO) / 4)
        self.joined = 0  # misses answered by a load another request started
        self.refreshed = 0  # keys reloaded ahead of expiry
        self._in_flight: dict[K, tuple[int, asyncio.Task[dict[K, V]]]] = {}
        self._due: dict[Loader[K, V], dict[K, None]] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def get_many(self, keys: list[K], load: Loader[K, V]) -> list[V]:
        """The value of each key, in order, from the cache or ``load``."""
        cache = self.cache
        if cache.max_size <= 0:
            cache.misses += len(keys)
            loaded = await load(list(dict.fromkeys(keys)))
            return [loaded[key] for key in keys]
        values, missing, due = cache.peek_many(keys)
        if due:
            self._queue_refresh(load, due)
        if not missing:
            return values  # type: ignore[return-value]
        loaded = await self._load_missing(missing, load)
        return [loaded[k] if v is None else v for k, v in zip(keys, values, strict=True)]

    async def _load_missing(self, missing: list[K], load: Loader[K, V]) -> dict[K, V]:
        generation = self.cache.generation
        flights: dict[asyncio.Task[dict[K, V]], None] = {}
        own: list[K] = []
        for key in dict.fromkeys(missing):
            flight = self._in_flight.get(key)
            if flight is not None and flight[0] == generation:
                flights[flight[1]] = None
                self.joined += 1
            else:
                own.append(key)
        if own:
            flights[self._start_load(own, load, generation)] = None
        loaded: dict[K, V] = {}
        for task in flights:
            # Shielded: a caller giving up (deadline, disconnect) must not cancel a load that
            # other requests are waiting for.
            loaded.update(await asyncio.shield(task))
        return loaded

    def _start_load(
        self, keys: list[K], load: Loader[K, V], generation: int
    ) -> asyncio.Task[dict[K, V]]:
        task = asyncio.create_task(self._load_and_store(keys, load, generation))
        for key in keys:
            self._in_flight[key] = (generation, task)
        task.add_done_callback(lambda done: self._landed(keys, done))
        return task

    async def _load_and_store(
        self, keys: list[K], load: Loader[K, V], generation: int
    ) -> dict[K, V]:
        async with asyncio.timeout(self.load_timeout_s):
            loaded = await load(keys)
        put = self.cache.put
        for key, value in loaded.items():
            put(key, value, generation)
        return loaded

    def _landed(self, keys: list[K], task: asyncio.Task[dict[K, V]]) -> None:
        for key in keys:
            flight = self._in_flight.get(key)
            if flight is not None and flight[1] is task:
                del self._in_flight[key]
        # Retrieved here, as nobody may be waiting (a refresh, or waiters that gave up). A
        # failed refresh leaves its entries served until they expire; readiness reports the
        # store, and a failed miss reaches its waiters.
        if not task.cancelled() and (error := task.exception()) is not None:
            log.debug("feature load failed: %s", type(error).__name__)

    def _queue_refresh(self, load: Loader[K, V], keys: list[K]) -> None:
        queued = self._due.setdefault(load, {})
        in_flight = self._in_flight
        for key in keys:
            if key not in in_flight:
                queued[key] = None
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_soon())

    async def _refresh_soon(self) -> None:
        """Load every key that came due within one window, one load per loader."""
        try:
            await asyncio.sleep(self.refresh_window_s)
        finally:
            self._refresher = None
        due, self._due = self._due, {}
        generation = self.cache.generation
        for load, queued in due.items():
            keys = [key for key in queued if key not in self._in_flight]
            if keys:
                self.refreshed += len(keys)
                self._start_load(keys, load, generation)

    async def close(self) -> None:
        """Stop background refreshes and loads (service shutdown)."""
        tasks: dict[asyncio.Task[Any], None] = {task: None for _, task in self._in_flight.values()}
        if self._refresher is not None:
            tasks[self._refresher] = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._due.clear()
