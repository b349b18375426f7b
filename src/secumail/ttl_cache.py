"""A small time-bounded memo for rows read on every message or login (accounts, TLS
strategies, route memory, verified domains, DKIM keys, MTA-STS lookups): a burst of work
costs one read, a change shows within `ttl`.

Bounded both ways: an entry is forgotten `ttl` seconds after it was stored, and the cache
never holds more than `max_entries` (the oldest goes first). Entries are kept in the order
they were stored, so the expired ones are always at the front and are swept from there.
It imports nothing of the project's, so every layer may use it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> T | None:
        """The value stored for `key` less than `ttl` seconds ago, else None."""
        hit = self._entries.get(key)
        if hit is not None and self._clock() - hit[0] < self.ttl:
            return hit[1]
        return None

    def put(self, key: Hashable, value: T) -> None:
        now = self._clock()
        self._entries.pop(key, None)  # re-stored: it moves to the back, with the newest
        self._sweep(now)
        self._entries[key] = (now, value)

    def discard(self, key: Hashable) -> None:
        """Forget `key` (its row changed): the next read loads it again."""
        self._entries.pop(key, None)

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The fresh value for `key`, loading (and storing) it when there is none."""
        hit = self._entries.get(key)
        if hit is not None and self._clock() - hit[0] < self.ttl:
            return hit[1]
        value = await load()
        self.put(key, value)
        return value

    def _sweep(self, now: float) -> None:
        """Drop expired entries (at the front), then the oldest while over the bound."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if now - entries[oldest][0] < self.ttl and len(entries) < self.max_entries:
                return
            del entries[oldest]
