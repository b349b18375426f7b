"""DNS lookups for delivery and domain checks (dnspython, async).

`dns.nameservers` entries are "host" or "host:port" ("[v6]:port" for IPv6); empty means
the system resolver. Answers are translated: NXDOMAIN → DnsPermanentError, a missing type
→ empty result, SERVFAIL/timeouts → DnsTemporaryError.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver

from secumail.errors import DnsPermanentError, DnsTemporaryError
from secumail.mail.endpoints import parse_host_port

ANSWER_MEMO = 10_000  # answers kept at most (then the memo starts over)
PREFETCH_FRACTION = 0.1  # refresh an answer in use once this share of its TTL is left


@dataclass(frozen=True, slots=True)
class _Memo:
    """One remembered answer: its records (None: the name does not exist), its DNSSEC
    status, when it expires and the TTL it came with."""

    expires: float
    ttl: float
    records: list[Any] | None
    secure: bool

    @classmethod
    def negative(
        cls, records: list[Any] | None, secure: bool, response: dns.message.Message | None
    ) -> _Memo:
        """An absence, kept for the negative TTL: the SOA's TTL capped by its MINIMUM
        field (RFC 2308 §5); not kept when the response has no SOA."""
        ttl = 0.0
        for rrset in response.authority if response is not None else []:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                ttl = float(min(rrset.ttl, rrset[0].minimum))
                break
        return cls(time.time() + ttl, ttl, records, secure)

    def result(self, name: str) -> tuple[list[Any], bool]:
        if self.records is None:
            raise DnsPermanentError(f"{name}: no such domain (NXDOMAIN)")
        return list(self.records), self.secure


def parse_nameserver(entry: str) -> tuple[str, int]:
    return parse_host_port(entry, 53)


def nameserver_list(nameservers: list[str]) -> list[dns.nameserver.Nameserver]:
    """`dns.nameservers` ("host" or "host:port") as dnspython's nameserver objects."""
    return [dns.nameserver.Do53Nameserver(h, p) for h, p in map(parse_nameserver, nameservers)]


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
    secure: bool = False  # DNSSEC-validated (AD bit from a trusted validating resolver)


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """TLSA records at `_port._tcp.host` as (usage, selector, mtype, data), and whether the
    answer (or its denial) was DNSSEC-validated."""

    records: list[tuple[int, int, int, bytes]]
    secure: bool


def all_loopback(nameservers: list[str]) -> bool:
    hosts = [parse_nameserver(n)[0] for n in nameservers]
    return bool(hosts) and all(h.startswith("127.") or h == "::1" for h in hosts)


class Resolver:
    """Lookups with their DNSSEC status.

    The AD bit is trusted only when `trust_ad` is set: by default when every configured
    nameserver is on loopback, i.e. a local validating resolver such as unbound (RFC 7672
    §1.3 relies on the same assumption). The AD bit from a remote resolver could be set by
    anyone on the path.
    """

    def __init__(
        self, nameservers: list[str], timeout: float = 5.0, *, trust_ad: bool | None = None
    ) -> None:
        self.trust_ad = all_loopback(nameservers) if trust_ad is None else trust_ad
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = nameserver_list(nameservers)
        else:
            self._resolver = dns.asyncresolver.Resolver()
        # Answers as this class hands them out, kept for their TTL — negative ones too,
        # for the negative TTL of RFC 2308 §5 — so the route stage's MX lookup serves the
        # deliver stage, a burst to one domain costs one lookup, and a hit costs a dict
        # lookup instead of dnspython's query machinery. Lookups of one name in flight
        # are shared, and an answer in the last tenth of its TTL is refreshed in the
        # background while it is still served (as unbound's `prefetch`): a busy domain's
        # mail never waits for its records to expire and be fetched again.
        self._answers: dict[tuple[str, str], _Memo] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[_Memo]] = {}
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        # DO bit (RFC 3225): ask for DNSSEC so the resolver reports validation in AD.
        self._resolver.use_edns(0, dns.flags.DO, 1232)

    def _secure(self, response: dns.message.Message | None) -> bool:
        return self.trust_ad and response is not None and bool(response.flags & dns.flags.AD)

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        return (await self._query_secure(name, rdtype))[0]

    async def _query_secure(self, name: str, rdtype: str) -> tuple[list[Any], bool]:
        key = (name, rdtype)
        memo = self._answers.get(key)
        now = time.time()
        if memo is not None:
            if memo.expires > now:
                if memo.expires - now < memo.ttl * PREFETCH_FRACTION:
                    self._lookup_shared(key)  # refresh ahead; this caller is served now
                return memo.result(name)
            del self._answers[key]
        return (await asyncio.shield(self._lookup_shared(key))).result(name)

    def _lookup_shared(self, key: tuple[str, str]) -> asyncio.Task[_Memo]:
        """The lookup of `key` in flight on this loop, or a new one."""
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is not None and not task.done() and task.get_loop() is loop:
            return task
        task = loop.create_task(self._lookup(*key))
        self._inflight[key] = task

        def finished(t: asyncio.Task[_Memo]) -> None:
            if self._inflight.get(key) is t:
                del self._inflight[key]
            if not t.cancelled():
                t.exception()  # a failed refresh nobody awaited is not an error

        task.add_done_callback(finished)
        return task

    async def _lookup(self, name: str, rdtype: str) -> _Memo:
        """Ask the resolver; remember the answer (or the absence) for its TTL."""
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            response = next(iter(exc.responses().values()), None)  # type: ignore[no-untyped-call]
            memo = _Memo.negative(None, self._secure(response), response)
        except dns.resolver.NoAnswer as exc:
            response = exc.kwargs.get("response")
            memo = _Memo.negative([], self._secure(response), response)
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: DNS server failure") from exc
        except dns.exception.Timeout as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: DNS timeout") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from exc
        else:
            ttl = max(0.0, answer.expiration - time.time())
            memo = _Memo(answer.expiration, ttl, list(answer), self._secure(answer.response))
        if memo.ttl > 0:
            if len(self._answers) >= ANSWER_MEMO:
                self._answers.clear()
            self._answers[(name, rdtype)] = memo
        return memo

    async def mx(self, domain: str) -> MxAnswer:
        """MX hosts of `domain` sorted by preference, equal preferences shuffled."""
        records, secure = await self._query_secure(domain, "MX")
        if not records:
            # RFC 5321 §5.1: no MX → the domain itself, if it has an address.
            return MxAnswer([MxHost(0, domain)], implicit=True, secure=secure)
        hosts = [
            MxHost(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in records
        ]
        # RFC 7505 §3: a single MX "." means the domain accepts no mail.
        if len(hosts) == 1 and hosts[0].host in ("", "."):
            return MxAnswer([], null_mx=True, secure=secure)
        hosts = [h for h in hosts if h.host not in ("", ".")]
        random.shuffle(hosts)
        hosts.sort(key=lambda h: h.preference)
        return MxAnswer(hosts, secure=secure)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`; empty when it has none."""
        return (await self.addresses_secure(host))[0]

    async def addresses_secure(self, host: str) -> tuple[list[str], bool]:
        """Addresses of `host`, and whether every answer was DNSSEC-validated."""
        out: list[str] = []
        secure = True
        temporary: DnsTemporaryError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                records, ok = await self._query_secure(host, rdtype)
            except DnsTemporaryError as exc:
                temporary = exc
                continue
            out.extend(r.address for r in records)
            secure = secure and ok
        if not out and temporary is not None:
            raise temporary
        return out, secure and temporary is None

    async def tlsa(self, host: str, port: int = 25) -> TlsaAnswer:
        """TLSA records for `_port._tcp.host` (RFC 7672 §2.2). SERVFAIL (bogus or broken
        DNSSEC) raises DnsTemporaryError: never read as "no TLSA"."""
        name = f"_{port}._tcp.{host}"
        try:
            records, secure = await self._query_secure(name, "TLSA")
        except DnsPermanentError:
            return TlsaAnswer([], False)
        return TlsaAnswer([(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in records], secure)

    async def txt(self, name: str) -> list[str]:
        """TXT strings at `name` (each record's strings joined); NXDOMAIN → empty."""
        try:
            records = await self._query(name, "TXT")
        except DnsPermanentError:
            return []
        return [b"".join(r.strings).decode("utf-8", errors="replace") for r in records]
