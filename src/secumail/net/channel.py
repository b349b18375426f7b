"""A byte channel over an asyncio transport: line reads with limits, STARTTLS, flow control.

One Channel per connection; the session coroutine reads from it. Input is buffered, so
pipelined commands (RFC 2920) are simply read in turn. Output is held until the session
waits for input (or drains, or closes): the replies to a pipelined group leave together
in one TLS record and one send, as RFC 2920 §3.2 allows; `discard_input()` drops what is
buffered, which STARTTLS needs (CVE-2011-0411: nothing sent in plaintext before the
handshake may be acted on after it).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

HIGH_WATER = 256 * 1024


class ChannelClosed(Exception):
    """The peer closed the connection, or it broke."""


class LineTooLong(Exception):
    """A line exceeded the limit; it has been consumed and dropped up to its LF."""


class Channel(asyncio.Protocol):
    def __init__(self, on_open: Callable[[Channel], Coroutine[Any, Any, None]]) -> None:
        self._on_open = on_open
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._paused = False
        self.task: asyncio.Task[None] | None = None
        self.peer: tuple[str, int] = ("", 0)

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.task = asyncio.get_running_loop().create_task(self._on_open(self))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- reading -------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _more(self) -> None:
        self.flush()
        if self._eof:
            raise ChannelClosed
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_line(self, limit: int) -> bytes:
        """The next line including its LF; LineTooLong past `limit` octets."""
        scanned = 0
        while True:
            i = self._buf.find(b"\n", scanned)
            if i >= 0:
                if i + 1 > limit:
                    del self._buf[: i + 1]
                    raise LineTooLong
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            scanned = len(self._buf)
            if scanned > limit:
                await self._discard_line()
                raise LineTooLong
            await self._more()

    async def _discard_line(self) -> None:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                del self._buf[: i + 1]
                return
            self._buf.clear()
            await self._more()

    async def read_some(self) -> bytes:
        """Whatever is buffered (waiting for at least one octet)."""
        while not self._buf:
            await self._more()
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def unread(self, data: bytes) -> None:
        """Put back octets read too far (pipelined input after DATA's end)."""
        self._buf[:0] = data

    def has_input(self) -> bool:
        return bool(self._buf)

    def discard_input(self) -> int:
        n = len(self._buf)
        self._buf.clear()
        return n

    # -- writing -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue `data`; it is sent when the session next waits for input, drains or
        closes (or at once by `flush`)."""
        self._out += data

    def flush(self) -> None:
        if not self._out:
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self._out))
        self._out.clear()

    async def drain(self) -> None:
        self.flush()
        await self._can_write.wait()

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> None:
        """Upgrade to TLS as the server; call right after writing the 220 (no await between)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.flush()
        self._buf.clear()
        new = await loop.start_tls(
            self.transport, self, ctx, server_side=True, ssl_handshake_timeout=timeout
        )
        if new is None:
            raise ChannelClosed
        self.transport = new

    def ssl_object(self) -> ssl.SSLObject | None:
        return None if self.transport is None else self.transport.get_extra_info("ssl_object")

    def close(self) -> None:
        """Close (TLS: after close_notify); the session's reads end at once, not when the
        peer gets round to acknowledging."""
        self.flush()
        self._eof = True
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._out.clear()
        if self.transport is not None:
            self.transport.abort()
