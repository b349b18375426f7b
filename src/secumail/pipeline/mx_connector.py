"""Opening a connection to one MX address the way its route demands.

- `dane`: TLS with the TLSA-authenticated certificate (RFC 7672 §3): the chain is checked
  against the MX's usable TLSA records after the handshake; no CA store involved.
- `mta-sts` and `verified`: PKIX — a chain to the system roots plus `tls.trust_file`,
  the certificate naming the MX (RFC 8461 §4.2 for MTA-STS).
- `relaxed`: unverified TLS when offered, else plaintext (explicitly allowed only).
Every route keeps the strategy's minimum TLS version. Connections are pooled per
(MX, IP, port, route), so a connection verified one way never serves another.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from secumail.config import DeliverySettings
from secumail.errors import InsecureRoute
from secumail.mail.secure_route import MxRoute, RouteMethod
from secumail.mail.tlsa import verify_dane
from secumail.net.smtp_client import SmtpConnection
from secumail.net.smtp_pool import ConnectionPool, PoolKey
from secumail.net.tls import dane_client_context, relaxed_client_context, verifying_client_context


class MxConnector:
    def __init__(self, settings: DeliverySettings, *, trust_file: Path | None, helo: str) -> None:
        self.settings = settings
        self.trust_file = trust_file
        self.helo = helo
        self.pool = ConnectionPool(
            idle=settings.connection_idle,
            max_messages=settings.connection_max_messages,
            per_destination=settings.connections_per_destination,
        )
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    def context(self, method: RouteMethod, min_tls: str) -> ssl.SSLContext:
        kind = {"dane": "dane", "relaxed": "relaxed"}.get(method.value, "pkix")
        ctx = self._contexts.get((kind, min_tls))
        if ctx is None:
            if kind == "dane":
                ctx = dane_client_context(min_tls)
            elif kind == "relaxed":
                ctx = relaxed_client_context()
            else:
                ctx = verifying_client_context(self.trust_file, min_tls)
            self._contexts[(kind, min_tls)] = ctx
        return ctx

    def key(self, route: MxRoute, ip: str) -> PoolKey:
        return (route.host, ip, self.settings.port, route.policy_key)

    async def acquire(self, route: MxRoute, ip: str) -> tuple[SmtpConnection, bool, str]:
        """A connection over `route`'s kind of TLS, whether it was reused, and what
        authenticated it (the TLSA record, for DANE). Raises DeliveryError subclasses."""

        async def opener() -> SmtpConnection:
            conn = await SmtpConnection.open(
                route.host,
                ip,
                self.settings.port,
                helo=self.helo,
                tls_context=self.context(route.method, route.min_tls),
                connect_timeout=self.settings.connect_timeout,
                command_timeout=self.settings.command_timeout,
                tls_required=route.method.authenticated,
            )
            if route.method is RouteMethod.DANE:
                result = verify_dane(route.tlsa, conn.peer_chain(), route.host, datetime.now(UTC))
                if not result.ok:
                    conn.abort()
                    raise InsecureRoute(
                        f"{route.host} [{ip}]: DANE: {result.reason}",
                        command="tls",
                        rfc8460=str(result.rfc8460),
                    )
                conn.authenticated_by = f"TLSA {result.matched}"
            return conn

        conn, reused = await self.pool.acquire(self.key(route, ip), opener)
        return conn, reused, conn.authenticated_by

    async def close(self) -> None:
        await self.pool.close()
