"""Minimal verified HTTPS requests (TLS reports, webhooks, an OIDC issuer's JWKS).

Stdlib only; the certificate is checked against the URL's host even when the caller
connects to an address it resolved and vetted itself (`connect_to`); no redirects.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024


class HttpsError(Exception):
    """The request could not be made or the answer was not HTTP."""


async def request(
    method: str,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    body: bytes = b"",
    content_type: str = "",
    headers: dict[str, str] | None = None,
    connect_to: tuple[str, int] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, response headers (lower-case names) and body."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise HttpsError(f"not an https URL: {url}")
    host, port = parts.hostname, parts.port or 443
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
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw_request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, real_port, ssl=ssl_context, server_hostname=host
            )
            try:
                writer.write(raw_request)
                await writer.drain()
                raw = await reader.read(MAX_BODY + 16384)
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
