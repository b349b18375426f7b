"""A minimal HTTPS POST for TLS reports (RFC 8460 §5.2): verified TLS, no redirects."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from secumail.errors import DeliveryError


async def post(
    url: str,
    body: bytes,
    content_type: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    connect_to: tuple[str, int] | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """POST `body` to an https URL; the status code. `connect_to` is an address the caller
    resolved (the certificate is still checked against the URL's host)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise DeliveryError(f"not an https URL: {url}", permanent=True)
    host = parts.hostname
    port = parts.port or 443
    address, real_port = connect_to or (host, port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nUser-Agent: Secumail\r\n{extra}\r\n"
    ).encode("ascii") + body
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, real_port, ssl=ssl_context, server_hostname=host
            )
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise DeliveryError(f"POST {url}: {exc}", permanent=False) from exc
    fields = status_line.decode("latin-1").split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise DeliveryError(f"POST {url}: malformed response {status_line[:80]!r}", permanent=False)
    return int(fields[1])
