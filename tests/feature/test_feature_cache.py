"""The read-through cache: bounded size and TTL, jittered refresh ahead of expiry, single-flight
loads that never outlive an invalidation, and no sharing at all when the cache is off."""

from __future__ import annotations

import asyncio

import pytest

from freshrank.feature.cache import REFRESH_FROM, REFRESH_TO, ReadThrough, TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A loader over a dict, recording every call; ``gate`` holds loads until it is set."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self, keys: list[str]) -> dict[str, int]:
        self.calls.append(keys)
        await self.gate.wait()
        return {key: self.values.get(key, 0) for key in keys}


def test_ttl_cache_bounds_size_and_expires() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, 10.0, clock=clock)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert len(cache) == 2
    assert cache.get("a") is None  # least recently used went first
    assert cache.get("b") == 2
    clock.now = 11.0
    assert cache.get("b") is None
    stale_generation = cache.generation
    cache.invalidate(["c"])
    cache.put("c", 99, stale_generation)  # a read that raced the invalidation
    assert cache.get("c") is None


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_entries_come_due_for_refresh_at_a_jittered_point_before_expiry(jitter: float) -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, 10.0, clock=clock, jitter=lambda: jitter)
    cache.put("a", 1)
    due_at = 10.0 * (REFRESH_FROM + (REFRESH_TO - REFRESH_FROM) * jitter)
    clock.now = due_at - 0.01
    assert cache.peek("a") == (1, False)
    clock.now = due_at
    assert cache.peek("a") == (1, True)  # still served, now due
    assert cache.peek_many(["a", "b"]) == ([1, None], ["b"], ["a"])
    clock.now = 10.01
    assert cache.peek("a") is None


def test_entries_stored_together_come_due_apart() -> None:
    clock = Clock()
    cache: TTLCache[int, int] = TTLCache(1000, 10.0, clock=clock)
    for key in range(1000):
        cache.put(key, key)
    clock.now = 10.0 * (REFRESH_FROM + REFRESH_TO) / 2
    _, missing, due = cache.peek_many(range(1000))
    assert not missing
    assert 300 < len(due) < 700  # about half: the due times are spread over the window


async def test_concurrent_misses_share_one_load() -> None:
    store = Store({"a": 1, "b": 2, "c": 3})
    reads: ReadThrough[str, int] = ReadThrough(TTLCache(100, 60.0), load_timeout_s=5.0)
    store.gate.clear()
    first = asyncio.create_task(reads.get_many(["a", "b"], store.load))
    await asyncio.sleep(0)
    second = asyncio.create_task(reads.get_many(["b", "c", "b"], store.load))
    await asyncio.sleep(0)
    store.gate.set()
    assert await first == [1, 2]
    assert await second == [2, 3, 2]
    assert store.calls == [["a", "b"], ["c"]]  # "b" joined the first load
    assert reads.joined == 1
    assert await reads.get_many(["a", "b", "c"], store.load) == [1, 2, 3]
    assert len(store.calls) == 2  # all cached now


async def test_a_caller_giving_up_does_not_cancel_a_shared_load() -> None:
    store = Store({"a": 1})
    reads: ReadThrough[str, int] = ReadThrough(TTLCache(100, 60.0), load_timeout_s=5.0)
    store.gate.clear()
    impatient = asyncio.create_task(reads.get_many(["a"], store.load))
    await asyncio.sleep(0)
    patient = asyncio.create_task(reads.get_many(["a"], store.load))
    await asyncio.sleep(0)
    impatient.cancel()
    store.gate.set()
    assert await patient == [1]
    assert store.calls == [["a"]]


async def test_a_load_in_flight_at_an_invalidation_is_not_joined_afterwards() -> None:
    store = Store({"a": 1})
    cache: TTLCache[str, int] = TTLCache(100, 60.0)
    reads: ReadThrough[str, int] = ReadThrough(cache, load_timeout_s=5.0)
    store.gate.clear()
    before = asyncio.create_task(reads.get_many(["a"], store.load))
    await asyncio.sleep(0)
    store.values["a"] = 2  # the stream changed "a" while the first load was in flight
    cache.invalidate(["a"])
    after = asyncio.create_task(reads.get_many(["a"], store.load))
    await asyncio.sleep(0)
    store.gate.set()
    assert await after == [2]
    await before
    assert store.calls == [["a"], ["a"]]
    assert cache.get("a") == 2  # the stale load did not put its value back


async def test_due_entries_are_served_and_refreshed_together_in_the_background() -> None:
    clock = Clock()
    store = Store({"a": 1, "b": 2, "c": 3})
    cache: TTLCache[str, int] = TTLCache(100, 10.0, clock=clock, jitter=lambda: 0.0)
    reads: ReadThrough[str, int] = ReadThrough(cache, load_timeout_s=5.0)
    assert await reads.get_many(["a", "b", "c"], store.load) == [1, 2, 3]
    store.values.update(a=10, b=20)
    clock.now = 10.0 * REFRESH_FROM  # due, not expired
    assert await reads.get_many(["a"], store.load) == [1]  # served from the cache, no wait
    assert await reads.get_many(["b"], store.load) == [2]
    assert len(store.calls) == 1
    await asyncio.sleep(reads.refresh_window_s * 2)
    assert store.calls[1:] == [["a", "b"]]  # one load for both, "c" was not read
    assert reads.refreshed == 2
    assert await reads.get_many(["a", "b", "c"], store.load) == [10, 20, 3]
    await reads.close()


async def test_failed_loads_reach_every_waiter_and_are_not_cached() -> None:
    calls = 0

    async def broken(keys: list[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise OSError("store down")

    reads: ReadThrough[str, int] = ReadThrough(TTLCache(100, 60.0), load_timeout_s=5.0)
    results = await asyncio.gather(
        reads.get_many(["a"], broken), reads.get_many(["a"], broken), return_exceptions=True
    )
    assert [type(r) for r in results] == [OSError, OSError]
    assert calls == 1
    with pytest.raises(OSError, match="store down"):
        await reads.get_many(["a"], broken)
    assert calls == 2


async def test_cache_off_sends_every_read_to_the_store() -> None:
    store = Store({"a": 1})
    cache: TTLCache[str, int] = TTLCache(0, 60.0)
    reads: ReadThrough[str, int] = ReadThrough(cache, load_timeout_s=5.0)
    results = await asyncio.gather(*(reads.get_many(["a", "a"], store.load) for _ in range(3)))
    assert results == [[1, 1]] * 3
    assert store.calls == [["a"]] * 3
    assert len(cache) == 0
    assert cache.misses == 6
