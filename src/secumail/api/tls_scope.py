"""The TLS of the connection a request came over, for the handlers (`sender_watch`).

uvicorn (0.55) does not put the TLS of a connection into the ASGI scope: the ASGI "tls"
extension is not implemented by it, and the scope holds no transport. Its HTTP protocol
class is a setting (`uvicorn.Config(http=…)`), and the protocol object of a connection
calls `self.app(scope, receive, send)` for every request on it. `TlsScopeH11Protocol`
therefore wraps, once per connection and only after the handshake (asyncio calls
`connection_made` once TLS is up), that app with one that adds
`scope["extensions"]["secumail.tls"] = {"version": …, "cipher": …}` from the
connection's `ssl.SSLObject`. Our own extension name: the ASGI "tls" extension wants
numeric version and suite codes, which Python's `ssl` does not give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

EXTENSION = "secumail.tls"


class TlsScopeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, telling each request the TLS of its connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        cipher = ssl_object.cipher()
        info = {"version": ssl_object.version(), "cipher": cipher[0] if cipher else None}
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[EXTENSION] = info
            await inner(scope, receive, send)

        self.app = app


def connection_tls(scope: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(version, cipher) of the request's connection; (None, None) without TLS."""
    info = (scope.get("extensions") or {}).get(EXTENSION)
    if not isinstance(info, dict):
        return None, None
    return info.get("version"), info.get("cipher")
