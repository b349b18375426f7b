"""Failed-login rate limiting, per client address and per username (sliding window)."""

from __future__ import annotations

import time
from collections import deque


class AuthThrottle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def blocked(self, client_ip: str, username: str) -> bool:
        now = time.monotonic()
        return any(
            len(self._recent(k, now)) >= self.limit for k in (f"ip:{client_ip}", f"user:{username}")
        )

    def failed(self, client_ip: str, username: str) -> None:
        now = time.monotonic()
        for key in (f"ip:{client_ip}", f"user:{username}"):
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray attack
            for key in list(self._failures)[:50_000]:
                del self._failures[key]
