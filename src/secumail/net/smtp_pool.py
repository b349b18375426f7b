"""Reuse of delivery connections: one idle list per (MX, IP, port, TLS policy).

A connection goes back to the pool after a completed transaction and is reused for the
next message to the same MX while it is younger than `idle` seconds since last use and
has carried fewer than `max_messages` messages (Postfix's connection cache, in spirit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from secumail.net.smtp_client import SmtpConnection

PoolKey = tuple[str, str, int, str]


class ConnectionPool:
    def __init__(self, *, idle: float, max_messages: int) -> None:
        self.idle = idle
        self.max_messages = max_messages
        self._idle: dict[PoolKey, list[tuple[float, SmtpConnection]]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0
        self.reused = 0

    async def acquire(
        self, key: PoolKey, opener: Callable[[], Awaitable[SmtpConnection]]
    ) -> tuple[SmtpConnection, bool]:
        """A usable connection for `key`, and whether it was reused."""
        entries = self._idle.get(key)
        now = time.monotonic()
        while entries:
            since, conn = entries.pop()
            if conn.usable and now - since < self.idle:
                self.reused += 1
                return conn, True
            conn.abort()
        self.opened += 1
        return await opener(), False

    def release(self, key: PoolKey, conn: SmtpConnection) -> None:
        if not conn.usable or conn.messages_sent >= self.max_messages or self.idle <= 0:
            asyncio.get_running_loop().create_task(conn.quit())
            return
        self._idle.setdefault(key, []).append((time.monotonic(), conn))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while self._idle:
            await asyncio.sleep(max(0.5, self.idle / 2))
            now = time.monotonic()
            for key in list(self._idle):
                keep = []
                for since, conn in self._idle[key]:
                    if now - since >= self.idle or not conn.usable:
                        await conn.quit()
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
