"""Sender domains: the DNS records a customer publishes, and checking them.

Shared by the `secumail domain` commands and the REST API: ownership is proven by a TXT
record at `_secumail.<domain>`; each DKIM key signs once its record is seen in DNS.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from secumail.errors import NotFound
from secumail.mail.dns_records import (
    hostname_problem,
    spf_mechanism,
    sts_policy_id,
    txt_rdata,
    zone_line,
)
from secumail.net.dns import Resolver
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.store.metadata import MetadataStore
from secumail.store.records import Domain

VERIFY_LABEL = "_secumail"
VERIFY_PREFIX = "secumail-verification="


@dataclass
class DomainCheck:
    domain: str
    verified: bool
    dkim_published: bool
    owned: bool
    checks: list[dict[str, object]]


class DomainSetup:
    def __init__(
        self,
        store: MetadataStore,
        keyring: DkimKeyring,
        resolver: Resolver,
        *,
        hostname: str,
        gateway_domain: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.resolver = resolver
        self.hostname = hostname
        self.gateway_domain = gateway_domain
        self.clock = clock

    def hostname_problem(self) -> str | None:
        """Why `server.hostname` cannot stand in records others look up (None: it can)."""
        return hostname_problem(self.hostname)

    async def add(self, account_id: str, name: str) -> tuple[Domain, list[dict[str, object]]]:
        domain = await self.store.add_domain(account_id, name)
        await self.keyring.ensure_keys(name)
        return domain, await self.records(name, domain.token)

    async def records(self, domain: str, token: str | None) -> list[dict[str, object]]:
        """Every DNS record the customer publishes for `domain`, required ones first. Each
        has the plain `value` (web forms), `rdata` (quoted strings of at most 255 octets)
        and `zone`, a line for a zone file."""
        host = self.hostname
        out = []
        if token is not None:
            out.append(
                _record(
                    f"{VERIFY_LABEL}.{domain}",
                    f"{VERIFY_PREFIX}{token}",
                    "proves you control the domain",
                    required=True,
                )
            )
        for r in await self.keyring.records(domain):
            if r.retired:
                continue
            kind = "RSA-2048" if r.algorithm.startswith("rsa") else "Ed25519 (RFC 8463)"
            out.append(
                _record(
                    r.name,
                    r.value,
                    f"DKIM {kind} public key, selector {r.selector}"
                    + (" (published)" if r.published else ""),
                    required=True,
                )
            )
        policy_id = sts_policy_id(self.clock())
        out += [
            _record(
                domain,
                f"v=spf1 {spf_mechanism(host)} ~all",
                f"SPF: allow {host} to send for the domain (merge with your existing record)",
            ),
            _record(
                f"_dmarc.{domain}",
                f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}",
                "DMARC: receivers act on failed DKIM/SPF (start with p=none to observe)",
            ),
            _record(
                f"_mta-sts.{domain}",
                f"v=STSv1; id={policy_id}",
                "MTA-STS for your own inbound mail (RFC 8461), with a policy at "
                f"https://mta-sts.{domain}/.well-known/mta-sts.txt; give id a new value "
                "whenever that policy changes",
            ),
            _record(
                f"_smtp._tls.{domain}",
                f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
                "TLS reporting for your own inbound mail (RFC 8460)",
            ),
        ]
        return out

    async def verify(self, name: str) -> DomainCheck:
        """Ownership TXT (required to send) and each DKIM key (required to be signed with)."""
        checks = []
        owned = True
        try:
            domain: Domain | None = await self.store.get_domain(name)
        except NotFound:
            if name != self.gateway_domain:
                raise
            domain = None
        if domain is not None:
            expected = f"{VERIFY_PREFIX}{domain.token}"
            found = await self.resolver.txt(f"{VERIFY_LABEL}.{name}")
            owned = any(secrets.compare_digest(t.strip(), expected) for t in found)
            if owned:
                await self.store.mark_domain_verified(name)
            checks.append(
                {
                    "record": f"{VERIFY_LABEL}.{name}",
                    "what": "ownership",
                    "ok": owned,
                    "expected": expected,
                    "found": found,
                }
            )
        for record, ok, found in await self.keyring.check_published(name, self.resolver.txt):
            checks.append(
                {
                    "record": record.name,
                    "what": f"DKIM {record.algorithm}",
                    "ok": ok,
                    "expected": record.value,
                    "found": found,
                }
            )
        dkim_ok = any(c["ok"] for c in checks if str(c["what"]).startswith("DKIM"))
        verified = owned or (domain is not None and domain.verified)
        return DomainCheck(name, verified, dkim_ok, owned, checks)


def _record(name: str, value: str, purpose: str, *, required: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "type": "TXT",
        "value": value,
        "rdata": txt_rdata(value),
        "zone": zone_line(name, "TXT", value),
        "purpose": purpose,
        "required": required,
    }
