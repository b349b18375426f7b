"""The memo in front of per-message reads forgets: by age and by count."""

from __future__ import annotations

import asyncio

from secumail.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_served_until_it_is_ttl_old() -> None:
    clock = Clock()
    cache: TtlCache[str] = TtlCache(5.0, clock=clock)
    cache.put("a", "first")
    clock.now += 4.9
    assert cache.peek("a") == "first"
    clock.now += 0.1
    assert cache.peek("a") is None


def test_get_loads_once_while_fresh_and_again_once_expired() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(1.0, clock=clock)
    loads = []

    async def load() -> int:
        loads.append(clock.now)
        return len(loads)

    async def run() -> list[int]:
        got = [await cache.get("k", load), await cache.get("k", load)]
        clock.now += 1.0
        got.append(await cache.get("k", load))
        return got

    assert asyncio.run(run()) == [1, 1, 2]
    assert len(loads) == 2


def test_expired_entries_are_dropped_when_something_new_is_stored() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(10.0, clock=clock)
    for i in range(100):
        cache.put(f"old{i}", i)
    clock.now += 10.0
    cache.put("new", 1)
    assert len(cache) == 1
    assert cache.peek("new") == 1


def test_never_holds_more_than_max_entries_and_drops_the_oldest() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(3600.0, max_entries=3, clock=clock)
    for i in range(10):
        clock.now += 1.0
        cache.put(i, i)
    assert len(cache) == 3
    assert [cache.peek(i) for i in range(10)] == [None] * 7 + [7, 8, 9]


def test_storing_a_key_again_makes_it_the_newest() -> None:
    clock = Clock()
    cache: TtlCache[str] = TtlCache(3600.0, max_entries=2, clock=clock)
    cache.put("a", "a1")
    cache.put("b", "b1")
    cache.put("a", "a2")  # now "b" is the oldest
    cache.put("c", "c1")
    assert cache.peek("a") == "a2"
    assert cache.peek("b") is None
    assert cache.peek("c") == "c1"


def test_discard_forgets_a_key() -> None:
    cache: TtlCache[str] = TtlCache(60.0)
    cache.put("a", "x")
    cache.discard("a")
    cache.discard("never-stored")
    assert cache.peek("a") is None
