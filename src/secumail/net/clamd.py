"""ClamAV's clamd over its socket: `zINSTREAM` (clamd(8), "COMMANDS").

The message is sent in chunks, each prefixed with its length as a 4-byte big-endian
integer, ended by a zero-length chunk; clamd answers one NUL-terminated line
(`mail.scan_result.parse_clamd_reply`). The address is a Unix socket path (`/run/…`) or
`host:port` (TCP, loopback in any sane setup: the plaintext travels over it). Everything
that is not a readable answer in time — refused, reset, timeout, garbage — is
`ScannerUnavailable`: the message waits, it is never taken as scanned.
"""

from __future__ import annotations

import asyncio
import struct

from secumail.errors import ScannerUnavailable
from secumail.mail.scan_result import ScanReplyError, ScanResult, parse_clamd_reply

CHUNK = 64 * 1024
MAX_REPLY = 4096


def _endpoint(address: str) -> tuple[str, int] | str:
    if address.startswith("/"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"scan.clamd must be a socket path or host:port, not {address!r}")
    return host.strip("[]"), int(port)


class ClamdClient:
    engine = "clamd"

    def __init__(self, address: str, *, timeout: float) -> None:
        self.address = address
        self.endpoint = _endpoint(address)
        self.timeout = timeout

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.endpoint, str):
            return await asyncio.open_unix_connection(self.endpoint)
        return await asyncio.open_connection(*self.endpoint)

    async def scan(self, data: bytes) -> ScanResult:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open()
                try:
                    return await self._instream(reader, writer, data)
                finally:
                    writer.close()
        except TimeoutError:
            raise ScannerUnavailable(self.engine, f"no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise ScannerUnavailable(self.engine, f"{self.address}: {exc}") from None

    async def _instream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> ScanResult:
        try:
            writer.write(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                piece = view[start : start + CHUNK]
                writer.write(struct.pack(">I", len(piece)))
                writer.write(piece)
                await writer.drain()
            writer.write(struct.pack(">I", 0))
            await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # clamd stops reading at StreamMaxLength and says so: read its answer
        try:
            raw = await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError as exc:
            raw = exc.partial
        except asyncio.LimitOverrunError:
            raise ScannerUnavailable(self.engine, "reply too long") from None
        if not raw:
            raise ScannerUnavailable(self.engine, "connection closed without an answer")
        try:
            return parse_clamd_reply(raw[:MAX_REPLY])
        except ScanReplyError as exc:
            raise ScannerUnavailable(self.engine, str(exc)) from None
