"""DNS lookups for delivery and domain checks (dnspython, async).

`dns.nameservers` entries are "host" or "host:port" ("[v6]:port" for IPv6); empty means
the system resolver. Answers are translated: NXDOMAIN → DnsPermanentError, a missing type
→ empty result, SERVFAIL/timeouts → DnsTemporaryError.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from secumail.errors import DnsPermanentError, DnsTemporaryError


def parse_nameserver(entry: str) -> tuple[str, int]:
    entry = entry.strip()
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]:")
        return host.rstrip("]"), int(port or 53)
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, 53


@dataclass(frozen=True, slots=True)
class MxHost:
    preference: int
    host: str


@dataclass(frozen=True, slots=True)
class MxAnswer:
    """The MX set of a domain, in the order to try (RFC 5321 §5.1)."""

    hosts: list[MxHost]
    null_mx: bool = False  # RFC 7505: the domain accepts no mail
    implicit: bool = False  # no MX records: the domain itself is the MX


class Resolver:
    def __init__(self, nameservers: list[str], timeout: float = 5.0) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in map(parse_nameserver, nameservers)
            ]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        # Positive and negative answers are kept for their TTL (RFC 2308 for negatives):
        # the route stage's MX lookup serves the deliver stage, and a burst to one domain
        # costs one lookup, not one per message.
        self._resolver.cache = dns.resolver.LRUCache(max_size=10_000)
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.use_edns(0, 0, 1232)

    async def _query(self, name: str, rdtype: str) -> list:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsPermanentError(f"{name}: no such domain (NXDOMAIN)") from exc
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: DNS server failure") from exc
        except dns.exception.Timeout as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: DNS timeout") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from exc
        return list(answer)

    async def mx(self, domain: str) -> MxAnswer:
        """MX hosts of `domain` sorted by preference, equal preferences shuffled."""
        records = await self._query(domain, "MX")
        if not records:
            # RFC 5321 §5.1: no MX → the domain itself, if it has an address.
            return MxAnswer([MxHost(0, domain)], implicit=True)
        hosts = [
            MxHost(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in records
        ]
        # RFC 7505 §3: a single MX "." means the domain accepts no mail.
        if len(hosts) == 1 and hosts[0].host in ("", "."):
            return MxAnswer([], null_mx=True)
        hosts = [h for h in hosts if h.host not in ("", ".")]
        random.shuffle(hosts)
        hosts.sort(key=lambda h: h.preference)
        return MxAnswer(hosts)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`; empty when it has none."""
        out: list[str] = []
        temporary: DnsTemporaryError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                out.extend(r.address for r in await self._query(host, rdtype))
            except DnsTemporaryError as exc:
                temporary = exc
        if not out and temporary is not None:
            raise temporary
        return out

    async def txt(self, name: str) -> list[str]:
        """TXT strings at `name` (each record's strings joined); NXDOMAIN → empty."""
        try:
            records = await self._query(name, "TXT")
        except DnsPermanentError:
            return []
        return [b"".join(r.strings).decode("utf-8", errors="replace") for r in records]
