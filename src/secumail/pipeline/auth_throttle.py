"""Failed-login rate limiting, per client network and per username (sliding window).

IPv6 clients are counted per /64 (one customer line usually owns a whole /64), IPv4 per
address. The table is bounded: past MAX_KEYS, keys that are not (yet) blocking are
dropped first, so filling the table with throw-away keys cannot lift a block.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque

MAX_KEYS = 100_000


def _network(client_ip: str) -> str:
    try:
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class AuthThrottle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _keys(self, client_ip: str, username: str) -> tuple[str, str]:
        return f"ip:{_network(client_ip)}", f"user:{username}"

    def _recent(self, key: str, now: float) -> int:
        q = self._failures.get(key)
        if q is None:
            return 0
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return 0
        return len(q)

    def blocked(self, client_ip: str, username: str) -> bool:
        now = time.monotonic()
        return any(self._recent(k, now) >= self.limit for k in self._keys(client_ip, username))

    def failed(self, client_ip: str, username: str) -> None:
        now = time.monotonic()
        for key in self._keys(client_ip, username):
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > MAX_KEYS:
            self._shrink(now)

    def _shrink(self, now: float) -> None:
        for key in list(self._failures):
            if self._recent(key, now) < self.limit:
                self._failures.pop(key, None)
            if len(self._failures) <= MAX_KEYS // 2:
                return
