"""Minimal verified HTTPS requests (TLS reports, webhooks, an OIDC issuer's JWKS), and
plain HTTP to a local service (rspamd on loopback).

Stdlib only; the certificate is checked against the URL's host even when the caller
connects to an address it resolved and vetted itself (`connect_to`); no redirects. Plain
`http:` only when the caller passes no TLS context: a choice made in code, never by a URL.
The answer is read to the end (the server closes: `Connection: close`), at most
`MAX_BODY` octets of body.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024


class HttpsError(Exception):
    """The request could not be made or the answer was not HTTP."""


async def request(
    method: str,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    body: bytes = b"",
    content_type: str = "",
    headers: dict[str, str] | Sequence[tuple[str, str]] | None = None,
    connect_to: tuple[str, int] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, response headers (lower-case names) and body. `headers` as a sequence of
    pairs may repeat a name."""
    parts = urlsplit(url)
    scheme = "https" if ssl_context is not None else "http"
    if parts.scheme != scheme or not parts.hostname:
        raise HttpsError(f"not an {scheme} URL: {url}")
    host, port = parts.hostname, parts.port or (443 if ssl_context is not None else 80)
    address, real_port = connect_to or (host, port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: close",
        "User-Agent: Secumail",
    ]
    if body or method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    for k, v in pairs:
        if any(c in k + v for c in "\r\n\0"):
            raise HttpsError(f"{method} {url}: a header field with a line break")
        lines.append(f"{k}: {v}")
    raw_request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address,
                real_port,
                ssl=ssl_context,
                server_hostname=host if ssl_context is not None else None,
            )
            try:
                writer.write(raw_request)
                await writer.drain()
                raw = await _read_to_end(reader, MAX_BODY + 16384)
            finally:
                writer.close()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise HttpsError(f"{method} {url}: {exc}") from exc
    head, _, content = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise HttpsError(f"{method} {url}: malformed response {status_line[:80]!r}")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    if response_headers.get("transfer-encoding", "").lower() == "chunked":
        content = _dechunk(content)
    return int(fields[1]), response_headers, content[:MAX_BODY]


async def _read_to_end(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Everything until the server closes, or the first `limit` octets."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        data = await reader.read(min(65536, limit - total))
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def _dechunk(data: bytes) -> bytes:
    out, rest = [], data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)
