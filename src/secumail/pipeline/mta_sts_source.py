"""MTA-STS policies for delivery (RFC 8461 §3, §5): discovered, fetched, cached, refreshed.

The `_mta-sts.<domain>` TXT record says whether a policy exists and its id; the policy
comes from `https://mta-sts.<domain>/.well-known/mta-sts.txt` (port `mta_sts.port`),
PKIX-verified. Policies are cached in the store across restarts, refetched when the id
changes or half of `max_age` has passed, and — the point of MTA-STS — a cached policy
still applies when a later discovery or fetch fails, until its `max_age` runs out.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass

from secumail.errors import DnsError
from secumail.mail.mta_sts import StsError, StsMode, StsPolicy, parse_txt_record, policy_host
from secumail.mail.tlsrpt import ResultType
from secumail.net.dns import Resolver
from secumail.net.mta_sts_fetch import fetch_policy
from secumail.store.routing import CachedStsPolicy, RoutingStore
from secumail.ttl_cache import TtlCache

log = logging.getLogger("secumail.mta_sts")
MEMORY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class StsLookup:
    policy: StsPolicy | None
    failure: str = ""  # why discovery or fetching failed (the cached policy may still apply)
    result_type: str = ""  # RFC 8460 result type of that failure


def _from_cache(c: CachedStsPolicy) -> StsPolicy:
    return StsPolicy(StsMode(c.mode), c.mx, c.max_age, c.policy_id)


class StsPolicySource:
    def __init__(
        self,
        resolver: Resolver,
        routing: RoutingStore,
        *,
        ssl_context: ssl.SSLContext,
        port: int,
        timeout: float,
    ) -> None:
        self.resolver = resolver
        self.routing = routing
        self.ssl_context = ssl_context
        self.port = port
        self.timeout = timeout
        self._recent: TtlCache[StsLookup] = TtlCache(MEMORY_SECONDS)

    async def lookup(self, domain: str) -> StsLookup:
        return await self._recent.get(domain, lambda: self._lookup(domain, time.time()))

    async def _lookup(self, domain: str, now: float) -> StsLookup:
        cached = await self.routing.sts_policy(domain)
        if cached is not None and cached.expires_at <= now:
            cached = None
        fallback = _from_cache(cached) if cached is not None else None
        try:
            record = parse_txt_record(await self.resolver.txt(f"_mta-sts.{domain}"))
        except (DnsError, StsError) as exc:
            reason = getattr(exc, "reason", str(exc))
            return StsLookup(
                fallback, f"MTA-STS record of {domain}: {reason}", "sts-policy-invalid"
            )
        if record is None:
            # §3.3 / §5.1: no record now, but an unexpired cached policy still holds.
            return StsLookup(fallback)
        fresh = (
            cached is not None
            and cached.policy_id == record.id
            and now - cached.fetched_at < cached.max_age / 2
        )
        if fresh:
            return StsLookup(fallback)
        try:
            addresses = await self.resolver.addresses(policy_host(domain))
            if not addresses:
                raise StsError(
                    f"{policy_host(domain)} has no address", ResultType.STS_POLICY_FETCH_ERROR
                )
            policy = await fetch_policy(
                domain,
                ssl_context=self.ssl_context,
                port=self.port,
                timeout=self.timeout,
                connect_to=(addresses[0], self.port),
                policy_id=record.id,
            )
        except (StsError, DnsError) as exc:
            reason = getattr(exc, "reason", str(exc))
            result_type = str(getattr(exc, "result_type", "sts-policy-fetch-error"))
            log.warning(
                "MTA-STS policy of %s: %s%s",
                domain,
                reason,
                " (cached policy applies)" if fallback else "",
            )
            return StsLookup(fallback, f"MTA-STS policy of {domain}: {reason}", result_type)
        await self.routing.put_sts_policy(
            CachedStsPolicy(
                domain,
                policy.policy_id,
                policy.mode.value,
                policy.mx_patterns,
                policy.max_age,
                now,
                now + policy.max_age,
            )
        )
        return StsLookup(policy)
