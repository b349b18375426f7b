"""Reuse of delivery connections: one idle list per (MX, IP, port, TLS policy).

A connection goes back to the pool after a completed transaction and is reused for the
next message to the same MX while it is younger than `idle` seconds since last use and
has carried fewer than `max_messages` messages (Postfix's connection cache, in spirit).
At most `per_destination` connections (busy or idle) are open to one key at a time
(Postfix: default_destination_concurrency_limit = 20); further deliveries wait their
turn rather than flood a recipient's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from secumail.net.smtp_client import SmtpConnection

PoolKey = tuple[str, str, int, str]


class ConnectionPool:
    def __init__(self, *, idle: float, max_messages: int, per_destination: int = 20) -> None:
        self.idle = idle
        self.max_messages = max_messages
        self.per_destination = per_destination
        self._idle: dict[PoolKey, list[tuple[float, SmtpConnection]]] = {}
        self._open: dict[PoolKey, int] = {}
        self._freed: dict[PoolKey, asyncio.Condition] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0
        self.reused = 0

    def _condition(self, key: PoolKey) -> asyncio.Condition:
        cond = self._freed.get(key)
        if cond is None:
            cond = self._freed[key] = asyncio.Condition()
        return cond

    async def _forget(self, key: PoolKey) -> None:
        """One connection of `key` is gone: let a waiting delivery open another."""
        self._open[key] = max(0, self._open.get(key, 1) - 1)
        cond = self._condition(key)
        async with cond:
            cond.notify()

    async def acquire(
        self, key: PoolKey, opener: Callable[[], Awaitable[SmtpConnection]]
    ) -> tuple[SmtpConnection, bool]:
        """A usable connection for `key`, and whether it was reused."""
        cond = self._condition(key)
        while True:
            entries = self._idle.get(key)
            now = time.monotonic()
            while entries:
                since, conn = entries.pop()
                if conn.usable and now - since < self.idle:
                    self.reused += 1
                    return conn, True
                conn.abort()
                self._open[key] = max(0, self._open.get(key, 1) - 1)
            if self._open.get(key, 0) < self.per_destination:
                break
            async with cond:
                await cond.wait()
        self._open[key] = self._open.get(key, 0) + 1
        try:
            conn = await opener()
        except BaseException:
            await self._forget(key)
            raise
        self.opened += 1
        return conn, False

    async def release(self, key: PoolKey, conn: SmtpConnection) -> None:
        """Hand a connection back after use (reusable or not)."""
        if not conn.usable or conn.messages_sent >= self.max_messages or self.idle <= 0:
            await conn.quit()
            await self._forget(key)
            return
        self._idle.setdefault(key, []).append((time.monotonic(), conn))
        cond = self._condition(key)
        async with cond:
            cond.notify()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def discard(self, key: PoolKey, conn: SmtpConnection) -> None:
        """A connection that failed in use: close it and free its place."""
        conn.abort()
        await self._forget(key)

    async def _reap(self) -> None:
        while self._idle:
            await asyncio.sleep(max(0.5, self.idle / 2))
            now = time.monotonic()
            for key in list(self._idle):
                keep = []
                for since, conn in self._idle[key]:
                    if now - since >= self.idle or not conn.usable:
                        await conn.quit()
                        await self._forget(key)
                    else:
                        keep.append((since, conn))
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for entries in self._idle.values():
            for _, conn in entries:
                await conn.quit()
        self._idle.clear()
        self._open.clear()
