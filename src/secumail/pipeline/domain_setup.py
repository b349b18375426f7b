"""Sender domains: the DNS records a customer publishes, and checking them.

Shared by the `secumail domain` commands and the REST API: ownership is proven by a TXT
record at `_secumail.<domain>`; each DKIM key signs once its record is seen in DNS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from secumail.errors import NotFound
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
    checks: list[dict]


class DomainSetup:
    def __init__(
        self,
        store: MetadataStore,
        keyring: DkimKeyring,
        resolver: Resolver,
        *,
        hostname: str,
        gateway_domain: str,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.resolver = resolver
        self.hostname = hostname
        self.gateway_domain = gateway_domain

    async def add(self, account_id: str, name: str) -> tuple[Domain, list[dict]]:
        domain = await self.store.add_domain(account_id, name)
        await self.keyring.ensure_keys(name)
        return domain, await self.records(name, domain.token)

    async def records(self, domain: str, token: str | None) -> list[dict]:
        """Every DNS record the customer publishes for `domain`, required ones first."""
        host = self.hostname
        out = []
        if token is not None:
            out.append(
                {
                    "name": f"{VERIFY_LABEL}.{domain}",
                    "type": "TXT",
                    "value": f"{VERIFY_PREFIX}{token}",
                    "purpose": "proves you control the domain",
                    "required": True,
                }
            )
        for r in await self.keyring.records(domain):
            if r.retired:
                continue
            kind = "RSA-2048" if r.algorithm.startswith("rsa") else "Ed25519 (RFC 8463)"
            out.append(
                {
                    "name": r.name,
                    "type": "TXT",
                    "value": r.value,
                    "required": True,
                    "purpose": f"DKIM {kind} public key, selector {r.selector}"
                    + (" (published)" if r.published else ""),
                }
            )
        out += [
            {
                "name": domain,
                "type": "TXT",
                "value": f"v=spf1 a:{host} ~all",
                "required": False,
                "purpose": f"SPF: allow {host} to send for the domain (merge with your existing record)",
            },
            {
                "name": f"_dmarc.{domain}",
                "type": "TXT",
                "value": f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}",
                "required": False,
                "purpose": "DMARC: receivers act on failed DKIM/SPF (start with p=none to observe)",
            },
            {
                "name": f"_mta-sts.{domain}",
                "type": "TXT",
                "value": "v=STSv1; id=<date of your policy>",
                "required": False,
                "purpose": "MTA-STS for your own inbound mail (RFC 8461), with a policy at "
                f"https://mta-sts.{domain}/.well-known/mta-sts.txt",
            },
            {
                "name": f"_smtp._tls.{domain}",
                "type": "TXT",
                "value": f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
                "required": False,
                "purpose": "TLS reporting for your own inbound mail (RFC 8460)",
            },
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
        dkim_ok = any(c["ok"] for c in checks if c["what"].startswith("DKIM"))
        verified = owned or (domain is not None and domain.verified)
        return DomainCheck(name, verified, dkim_ok, owned, checks)
