"""Gathers what the secure-route decision needs and asks `mail.secure_route`.

For one recipient domain: the MX set (with its DNSSEC status), per MX host the addresses
and — on a fully validated path — the TLSA records at `_<port>._tcp.<mx>` (RFC 7672
§2.2), the MTA-STS policy (RFC 8461), the operator's TLS strategies (domain row, account
row), and the downgrade memory. The planner only does this I/O; every decision (which
strategy, what the message's REQUIRETLS / "TLS-Required: No" change, what is worth
looking up, the route per MX, a possible downgrade) is a pure function there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from secumail.errors import DnsError, DnsPermanentError, DnsTemporaryError
from secumail.mail.secure_route import (
    HostDns,
    Level,
    RouteMethod,
    RoutePlan,
    RouteRequest,
    RouteTerms,
    TlsStrategy,
    choose_strategy,
    plan,
    route_terms,
)
from secumail.mail.tlsa import TlsaRecord
from secumail.net.dns import MxAnswer, Resolver
from secumail.pipeline.mta_sts_source import StsLookup, StsPolicySource
from secumail.store.records import Account
from secumail.store.routing import RouteMemory, RoutingStore, TlsPolicyRow
from secumail.ttl_cache import TtlCache


@dataclass(slots=True)
class DomainRoute:
    """Everything known about delivering to one domain right now."""

    answer: MxAnswer
    plan: RoutePlan
    hosts: dict[str, HostDns]
    sts: StsLookup
    strategy: TlsStrategy  # as the message's request adjusted it


def strategy_of(row: TlsPolicyRow | None) -> TlsStrategy | None:
    if row is None:
        return None
    return TlsStrategy(Level(row.dane), Level(row.mta_sts), Level(row.starttls), row.min_tls)


class RoutePlanner:
    def __init__(
        self, resolver: Resolver, sts: StsPolicySource, routing: RoutingStore, *, port: int
    ) -> None:
        self.resolver = resolver
        self.sts = sts
        self.routing = routing
        self.port = port
        # Read on every message, changed rarely: operators' changes show within seconds.
        self._strategies: TtlCache[TlsStrategy] = TtlCache(5.0)
        self._memory: TtlCache[RouteMemory | None] = TtlCache(5.0)

    async def strategy(self, domain: str, account_id: str | None) -> TlsStrategy:
        """The most specific override: recipient domain, else account, else the default."""
        return await self._strategies.get(
            (domain, account_id), lambda: self._strategy(domain, account_id)
        )

    async def _strategy(self, domain: str, account_id: str | None) -> TlsStrategy:
        for_domain = strategy_of(await self.routing.tls_policy("domain", domain))
        for_account = None
        if for_domain is None and account_id:  # read only when it can matter
            for_account = strategy_of(await self.routing.tls_policy("account", account_id))
        return choose_strategy(for_domain, for_account)

    async def route(
        self,
        domain: str,
        *,
        account: Account | None,
        tls_required_no: bool = False,
        requiretls: bool = False,
    ) -> DomainRoute:
        """Raises DnsPermanentError (no such domain) and DnsTemporaryError (try later)."""
        answer = await self.resolver.mx(domain)
        terms = route_terms(
            await self.strategy(domain, account.id if account else None),
            RouteRequest(
                account_allows_relaxed=bool(account and account.allow_relaxed_tls),
                from_gateway=account is None,
                tls_required_no=tls_required_no,
                requiretls=requiretls,
            ),
        )
        sts = StsLookup(None)
        if terms.wants_sts(null_mx=answer.null_mx):
            sts = await self.sts.lookup(domain)
        hosts = dict(
            await asyncio.gather(*(self._host(h.host, answer.secure, terms) for h in answer.hosts))
        )
        remembered = None
        if terms.use_memory:
            memory = await self._memory.get(domain, lambda: self.routing.memory(domain))
            remembered = RouteMethod(memory.method) if memory is not None else None
        result = plan(
            domain,
            [(h.preference, h.host) for h in answer.hosts],
            mx_secure=answer.secure,
            hosts=hosts,
            sts=sts.policy,
            terms=terms,
            remembered=remembered,
            null_mx=answer.null_mx,
        )
        return DomainRoute(answer, result, hosts, sts, terms.strategy)

    async def _host(self, host: str, mx_secure: bool, terms: RouteTerms) -> tuple[str, HostDns]:
        try:
            addresses, addr_secure = await self.resolver.addresses_secure(host)
        except DnsPermanentError:
            return host, HostDns(lookup_failure="no such host (NXDOMAIN)", lookup_permanent=True)
        except DnsTemporaryError as exc:
            return host, HostDns(lookup_failure=str(exc))
        info = HostDns(tuple(addresses), addr_secure)
        if not terms.wants_tlsa(mx_secure=mx_secure, addresses_secure=addr_secure):
            return host, info
        try:
            tlsa = await self.resolver.tlsa(host, self.port)
        except DnsError as exc:
            return host, replace(info, tlsa_failure=str(exc))
        records = tuple(TlsaRecord(*r) for r in tlsa.records)
        return host, replace(info, tlsa=records, tlsa_secure=tlsa.secure)
