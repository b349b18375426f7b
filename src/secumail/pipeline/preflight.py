"""Preflight: can Secumail reach this recipient securely, and how? (`secumail check`)

For each domain: the same route plan delivery would make (DNSSEC status, TLSA, MTA-STS,
strategy, downgrade memory), then a live probe of every MX address on its route: connect,
STARTTLS, the route's verification (DANE or PKIX), EHLO capabilities. Where verification
fails, a second, unauthenticated handshake shows what the server presents (certificate,
expiry, names) so the operator can say exactly what is wrong. Connections that passed go
back to the delivery pool; results are cached for `delivery.preflight_cache` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from secumail.errors import (
    ConnectError,
    DeliveryError,
    DnsPermanentError,
    DnsTemporaryError,
    InsecureRoute,
    SmtpReplyError,
)
from secumail.mail.address import AddressError, normalise_domain, parse_address
from secumail.mail.secure_route import MxRoute
from secumail.mail.tlsa import names_match
from secumail.net.smtp_client import SmtpConnection
from secumail.net.tls import relaxed_client_context
from secumail.pipeline.mx_connector import MxConnector
from secumail.pipeline.route_planner import RoutePlanner
from secumail.store.records import Account
from secumail.ttl_cache import TtlCache


@dataclass
class CertificateView:
    subject: str
    issuer: str
    not_after: str
    expired: bool
    names: list[str]
    name_match: bool
    sha256: str


@dataclass
class MxProbe:
    host: str
    ip: str | None
    preference: int | None
    route: str | None  # dane | mta-sts | verified | relaxed; None when the plan rejected the MX
    ok: bool
    reason: str = ""
    result_type: str = ""  # RFC 8460
    tls_version: str | None = None
    cipher: str | None = None
    chain_valid: bool | None = None
    certificate: CertificateView | None = None
    matched: str | None = None  # TLSA record / MTA-STS policy id that authenticated it
    requiretls: bool | None = None
    dnssec: dict[str, object] = field(default_factory=dict)


@dataclass
class CheckResult:
    target: str
    domain: str
    secure: bool
    method: str | None
    reasons: list[str]
    mx: list[MxProbe] = field(default_factory=list)
    dnssec: dict[str, object] = field(default_factory=dict)
    mta_sts: dict[str, object] = field(default_factory=dict)
    checked_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def domain_of(target: str) -> str:
    """The domain of an address (`a@b.example`) or a bare domain."""
    try:
        if "@" in target:
            return parse_address(target.strip(), utf8=not target.isascii()).domain
        return normalise_domain(target)
    except AddressError as exc:
        raise ValueError(str(exc)) from exc


def _certificate(der: bytes, host: str) -> CertificateView | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return CertificateView(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
        expired=cert.not_valid_after_utc < datetime.now(UTC),
        names=list(names),
        name_match=names_match(cert, [host]),
        sha256=hashlib.sha256(der).hexdigest(),
    )


class Preflight:
    def __init__(
        self, planner: RoutePlanner, connector: MxConnector, *, cache_seconds: float = 300.0
    ) -> None:
        self.planner = planner
        self.connector = connector
        self.cache_seconds = cache_seconds
        self._cache: TtlCache[CheckResult] = TtlCache(cache_seconds)
        self._relaxed = relaxed_client_context()

    async def check(self, target: str, account: Account | None = None) -> CheckResult:
        domain = domain_of(target)
        key = (domain, account.id if account else None)
        hit = self._cache.peek(key)
        if hit is not None:
            return CheckResult(**{**hit.__dict__, "target": target})
        result = await self._check(target, domain, account)
        result.checked_at = time.time()
        self._cache.put(key, result)
        return result

    async def check_many(
        self,
        targets: list[str],
        account: Account | None = None,
        *,
        concurrency: int = 8,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[CheckResult]:
        """Every target, domains probed concurrently; `progress(done, total)` after each."""
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(t: str) -> CheckResult:
            nonlocal done
            async with gate:
                try:
                    r = await self.check(t, account)
                except ValueError as exc:
                    r = CheckResult(t, "", False, None, [f"not an address or domain: {exc}"])
            done += 1
            if progress is not None:
                progress(done, len(targets))
            return r

        return list(await asyncio.gather(*(one(t) for t in targets)))

    async def _check(self, target: str, domain: str, account: Account | None) -> CheckResult:
        try:
            route = await self.planner.route(domain, account=account)
        except DnsPermanentError as exc:
            return CheckResult(target, domain, False, None, [str(exc)])
        except DnsTemporaryError as exc:
            return CheckResult(target, domain, False, None, [f"DNS failure, try later: {exc}"])
        if route.answer.null_mx:
            return CheckResult(
                target, domain, False, None, [f"{domain} accepts no mail (null MX, RFC 7505)"]
            )
        plan = route.plan
        sts = route.sts.policy
        result = CheckResult(
            target,
            domain,
            False,
            None,
            [],
            dnssec={"mx": route.answer.secure},
            mta_sts={
                "mode": sts.mode.value if sts else None,
                "policy_id": sts.policy_id if sts else None,
                "mx": list(sts.mx_patterns) if sts else [],
                "failure": route.sts.failure or None,
            },
        )
        for rejected in plan.rejected:
            result.mx.append(
                MxProbe(
                    rejected.host, None, None, None, False, rejected.reason, rejected.result_type
                )
            )
            result.reasons.append(rejected.reason)
        if route.sts.failure:
            result.reasons.append(route.sts.failure)
        probes = await asyncio.gather(
            *(self._probe(mx, ip) for mx in plan.routes for ip in route.hosts[mx.host].addresses)
        )
        for probe in probes:
            info = route.hosts[probe.host]
            probe.dnssec = {
                "address": info.addresses_secure,
                "tlsa": info.tlsa_secure,
                "tlsa_records": len(info.tlsa),
            }
            result.mx.append(probe)
            if not probe.ok:
                result.reasons.append(probe.reason)
        if plan.downgrade:
            result.reasons.append(plan.downgrade)
        else:
            first_ok = next((p for p in probes if p.ok), None)
            if first_ok is not None:
                result.secure, result.method = True, first_ok.route
        return result

    async def _probe(self, mx: MxRoute, ip: str) -> MxProbe:
        probe = MxProbe(mx.host, ip, mx.preference, mx.method.value, False)
        try:
            conn, _reused, matched = await self.connector.acquire(mx, ip)
        except InsecureRoute as exc:
            probe.reason, probe.result_type, probe.chain_valid = exc.reason, exc.rfc8460, False
            await self._diagnose(mx.host, ip, probe)
            return probe
        except (ConnectError, SmtpReplyError, DeliveryError) as exc:
            probe.reason = exc.reason
            return probe
        probe.ok = True
        probe.chain_valid = True
        probe.matched = matched or (f"mta-sts id={mx.policy_id}" if mx.policy_id else None)
        probe.requiretls = "REQUIRETLS" in conn.extensions
        if conn.tls is not None:
            probe.tls_version, probe.cipher = conn.tls.version, conn.tls.cipher
        chain = conn.peer_chain()
        if chain:
            probe.certificate = _certificate(chain[0], mx.host)
        await self.connector.pool.release(self.connector.key(mx, ip), conn)
        return probe

    async def _diagnose(self, host: str, ip: str, probe: MxProbe) -> None:
        """What the server presents, seen without authenticating it."""
        s = self.connector.settings
        try:
            conn = await SmtpConnection.open(
                host,
                ip,
                s.port,
                helo=self.connector.helo,
                tls_context=self._relaxed,
                connect_timeout=s.connect_timeout,
                command_timeout=s.command_timeout,
                tls_required=False,
            )
        except DeliveryError:
            return
        try:
            probe.requiretls = "REQUIRETLS" in conn.extensions
            if conn.tls is not None:
                probe.tls_version, probe.cipher = conn.tls.version, conn.tls.cipher
                chain = conn.peer_chain()
                if chain:
                    probe.certificate = _certificate(chain[0], host)
        finally:
            await conn.quit()
