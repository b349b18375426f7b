"""A minimal verified HTTPS GET (JWKS of an OpenID Connect issuer), stdlib only."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024


class HttpsGetError(Exception):
    pass


async def get(
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    connect_to: tuple[str, int] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of an https GET; no redirects followed."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise HttpsGetError(f"not an https URL: {url}")
    host, port = parts.hostname, parts.port or 443
    address, real_port = connect_to or (host, port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
        "Connection: close\r\nUser-Agent: Secumail\r\n\r\n"
    ).encode("ascii")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, real_port, ssl=ssl_context, server_hostname=host
            )
            try:
                writer.write(request)
                await writer.drain()
                raw = await reader.read(MAX_BODY + 16384)
            finally:
                writer.close()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise HttpsGetError(f"GET {url}: {exc}") from exc
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise HttpsGetError(f"GET {url}: malformed response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return int(fields[1]), headers, body[:MAX_BODY]


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
