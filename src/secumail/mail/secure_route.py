"""The secure-route decision for one recipient domain, as data (sans-I/O).

`plan()` decides, per MX host and from what DNS and MTA-STS said, how it may be reached:

1. **DANE** (RFC 7672): the MX and address answers are DNSSEC-validated and the TLSA
   answer at `_25._tcp.<mx>` is too, with usable DANE-TA(2)/DANE-EE(3) records. Then DANE
   is mandatory for that MX: its certificate must match a record — no fallback. A TLSA
   lookup that fails validation (bogus, SERVFAIL) makes the MX temporarily unusable
   (§2.2). DANE takes precedence over MTA-STS per MX (RFC 8461 §2).
2. **MTA-STS** (RFC 8461) in mode `enforce`: only MX hosts matching the policy's `mx`
   patterns, PKIX-verified. `testing` and `none` fall through to the baseline.
3. **Verified** (the baseline): STARTTLS, TLS 1.2+, a chain to a trusted root, the
   certificate naming the MX.
4. **Relaxed**: below verified TLS, only where the strategy says so and the account
   explicitly allows it; every such route is marked.

A `TlsStrategy` (operator overrides per recipient domain or account, in the style of
Stalwart's TLS strategies) can require or disable DANE and MTA-STS and relax STARTTLS.
The downgrade memory (the strongest method seen for the domain) turns a weaker offer into
a temporary failure rather than a silent downgrade.

`conclude()` turns what happened at each MX into the recipient's fate:
- a transaction took place over a secure route → the remote server's replies decide;
- every MX was reached and none offered a secure route → refused_insecure, at once;
- otherwise (some MX unreachable or answering 4xx) → deferred, to be retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from secumail.mail.mta_sts import StsMode, StsPolicy
from secumail.mail.tlsa import TlsaRecord, usable_for_smtp
from secumail.mail.tlsrpt import ResultType


class RouteMethod(enum.StrEnum):
    DANE = "dane"
    MTA_STS = "mta-sts"
    VERIFIED = "verified"
    # Below verified TLS: only for accounts that explicitly allow it (and the message asks,
    # e.g. "TLS-Required: No", RFC 8689 §4.2.1). TLS when offered, unverified; else plaintext.
    RELAXED = "relaxed"

    @property
    def authenticated(self) -> bool:
        return self is not RouteMethod.RELAXED

    @property
    def strength(self) -> int:
        return {"dane": 3, "mta-sts": 2, "verified": 1, "relaxed": 0}[self.value]


class Level(enum.StrEnum):
    REQUIRE = "require"
    OPTIONAL = "optional"
    DISABLE = "disable"


TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True, slots=True)
class TlsStrategy:
    """Operator overrides for a recipient domain or an account. The default is the
    strictest: DANE and MTA-STS used whenever published (and then binding), verified
    STARTTLS always, TLS 1.2 at least."""

    dane: Level = Level.OPTIONAL
    mta_sts: Level = Level.OPTIONAL
    starttls: Level = Level.REQUIRE
    min_tls: str = "TLSv1.2"

    @property
    def relaxes(self) -> bool:
        return self.starttls is not Level.REQUIRE

    def stricter(self, other: TlsStrategy) -> TlsStrategy:
        """The combination that gives up nothing either asks for: requirements win over
        options, options over disabling; relaxing STARTTLS needs both to relax."""
        order = {Level.REQUIRE: 2, Level.OPTIONAL: 1, Level.DISABLE: 0}

        def pick(a: Level, b: Level) -> Level:
            return a if order[a] >= order[b] else b

        return TlsStrategy(
            dane=pick(self.dane, other.dane),
            mta_sts=pick(self.mta_sts, other.mta_sts),
            starttls=pick(self.starttls, other.starttls),
            min_tls=max(self.min_tls, other.min_tls, key=TLS_VERSIONS.index),
        )


@dataclass(frozen=True, slots=True)
class MxRoute:
    """How to reach one MX host securely, and why (for the attempt record and TLSRPT)."""

    host: str
    preference: int
    method: RouteMethod
    tlsa: tuple[TlsaRecord, ...] = ()
    policy_id: str | None = None  # the MTA-STS policy id, when that is the route
    min_tls: str = "TLSv1.2"

    @property
    def policy_key(self) -> str:
        """Connections are pooled per route: what was verified one way serves only that way."""
        tlsa = ",".join(str(r) for r in self.tlsa)
        return f"{self.method.value}:{self.min_tls}:{tlsa}"


@dataclass(frozen=True, slots=True)
class HostDns:
    """What DNS said about one MX host."""

    addresses: tuple[str, ...] = ()
    addresses_secure: bool = False
    tlsa: tuple[TlsaRecord, ...] = ()
    tlsa_secure: bool = False
    tlsa_failure: str = ""  # the TLSA lookup failed (DNSSEC bogus, SERVFAIL): why
    lookup_failure: str = ""  # the address lookup failed: why
    lookup_permanent: bool = False  # ... because the host does not exist


@dataclass(frozen=True, slots=True)
class MxRejected:
    host: str
    reason: str
    temporary: bool
    result_type: str


@dataclass(slots=True)
class RoutePlan:
    domain: str
    routes: list[MxRoute] = field(default_factory=list)
    rejected: list[MxRejected] = field(default_factory=list)
    downgrade: str = ""  # non-empty: a weaker route than remembered; defer with this reason

    @property
    def strongest(self) -> RouteMethod | None:
        return max((r.method for r in self.routes), key=lambda m: m.strength, default=None)


def plan_routes(mx_hosts: list[tuple[int, str]], *, relaxed: bool = False) -> list[MxRoute]:
    """Baseline routes (verified TLS, or relaxed) when nothing else is known."""
    method = RouteMethod.RELAXED if relaxed else RouteMethod.VERIFIED
    return [MxRoute(host, pref, method) for pref, host in mx_hosts]


def plan(
    domain: str,
    mx_hosts: list[tuple[int, str]],
    *,
    mx_secure: bool,
    hosts: dict[str, HostDns],
    sts: StsPolicy | None,
    strategy: TlsStrategy = TlsStrategy(),
    relaxed_allowed: bool = False,
    remembered: RouteMethod | None = None,
    requiretls: bool = False,
) -> RoutePlan:
    """The route per MX, in preference order; MX hosts that may not be used, and why."""
    result = RoutePlan(domain)
    enforce = (
        sts is not None and sts.mode is StsMode.ENFORCE and strategy.mta_sts is not Level.DISABLE
    )
    for preference, host in mx_hosts:
        info = hosts.get(host, HostDns())
        if info.lookup_failure or not info.addresses:
            why = info.lookup_failure or "has no address records"
            result.rejected.append(
                MxRejected(
                    host,
                    f"{host}: {why}",
                    not info.lookup_permanent and bool(info.lookup_failure),
                    "",
                )
            )
            continue
        route, rejected = _route_for(
            host,
            preference,
            info,
            mx_secure=mx_secure,
            sts=sts if enforce else None,
            strategy=strategy,
            relaxed_allowed=relaxed_allowed,
        )
        if route is not None and requiretls and not _requiretls_ok(route, mx_secure):
            # RFC 8689 §5: the MX must come from DNSSEC or an MTA-STS policy.
            route, rejected = (
                None,
                MxRejected(
                    host,
                    f"{host}: REQUIRETLS needs an MX from DNSSEC-signed DNS or an MTA-STS policy",
                    False,
                    ResultType.VALIDATION_FAILURE,
                ),
            )
        if route is not None:
            result.routes.append(route)
        if rejected is not None:
            result.rejected.append(rejected)
    offered = _offered(hosts, mx_secure=mx_secure, enforce=enforce)
    if (
        remembered is not None
        and remembered.authenticated
        and not _overridden(remembered, strategy)
    ) and offered.strength < remembered.strength:
        result.downgrade = (
            f"{domain} offered {remembered.value} before and now only {offered.value}: refusing "
            "a possible downgrade until an operator clears it or the memory expires"
        )
    return result


def _offered(hosts: dict[str, HostDns], *, mx_secure: bool, enforce: bool) -> RouteMethod:
    """The strongest protection the domain publishes now (whether or not an MX passes)."""
    if mx_secure and any(
        h.addresses_secure and h.tlsa_secure and usable_for_smtp(h.tlsa) for h in hosts.values()
    ):
        return RouteMethod.DANE
    return RouteMethod.MTA_STS if enforce else RouteMethod.VERIFIED


def _overridden(remembered: RouteMethod, strategy: TlsStrategy) -> bool:
    """An operator who disabled a method for the domain has decided; memory yields."""
    if remembered is RouteMethod.DANE:
        return strategy.dane is Level.DISABLE
    return remembered is RouteMethod.MTA_STS and strategy.mta_sts is Level.DISABLE


def _requiretls_ok(route: MxRoute, mx_secure: bool) -> bool:
    if route.method in (RouteMethod.DANE, RouteMethod.MTA_STS):
        return True
    return route.method is RouteMethod.VERIFIED and mx_secure


def _route_for(
    host: str,
    preference: int,
    info: HostDns,
    *,
    mx_secure: bool,
    sts: StsPolicy | None,
    strategy: TlsStrategy,
    relaxed_allowed: bool,
) -> tuple[MxRoute | None, MxRejected | None]:
    # 1. DANE: only on a fully validated path (RFC 7672 §2.1, §2.2).
    if strategy.dane is not Level.DISABLE and mx_secure and info.addresses_secure:
        if info.tlsa_failure:
            return None, MxRejected(
                host,
                f"{host}: TLSA lookup failed ({info.tlsa_failure})",
                True,
                ResultType.DNSSEC_INVALID,
            )
        usable = usable_for_smtp(info.tlsa) if info.tlsa_secure else []
        if usable:
            return MxRoute(
                host, preference, RouteMethod.DANE, tuple(usable), min_tls=strategy.min_tls
            ), None
    if strategy.dane is Level.REQUIRE:
        return None, MxRejected(
            host,
            f"{host}: no DNSSEC-validated TLSA records, and DANE is required",
            False,
            ResultType.DANE_REQUIRED,
        )
    # 2. MTA-STS enforce (RFC 8461 §4.1, §5).
    if sts is not None:
        if not sts.permits(host):
            return None, MxRejected(
                host,
                f"{host}: not listed in the MTA-STS policy (mx: {', '.join(sts.mx_patterns)})",
                False,
                ResultType.VALIDATION_FAILURE,
            )
        return MxRoute(
            host, preference, RouteMethod.MTA_STS, policy_id=sts.policy_id, min_tls=strategy.min_tls
        ), None
    if strategy.mta_sts is Level.REQUIRE:
        return None, MxRejected(
            host,
            f"{host}: no MTA-STS policy in enforce mode, and MTA-STS is required",
            False,
            ResultType.STS_POLICY_INVALID,
        )
    # 3./4. Verified STARTTLS, or relaxed where explicitly allowed.
    if strategy.relaxes and relaxed_allowed:
        return MxRoute(host, preference, RouteMethod.RELAXED, min_tls=strategy.min_tls), None
    return MxRoute(host, preference, RouteMethod.VERIFIED, min_tls=strategy.min_tls), None


class MxOutcome(enum.Enum):
    TRANSACTION = "transaction"  # secure connection made; per-recipient replies exist
    INSECURE = "insecure"  # reached, but no secure route (definite)
    TEMPORARY = "temporary"  # unreachable, timeout, 4xx before the transaction
    PERMANENT = "permanent"  # 5xx before any recipient (e.g. greeting 554)


class DomainFate(enum.Enum):
    TRANSACTION = "transaction"
    REFUSED_INSECURE = "refused_insecure"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


def conclude(outcomes: list[MxOutcome]) -> DomainFate:
    if MxOutcome.TRANSACTION in outcomes:
        return DomainFate.TRANSACTION
    if outcomes and all(o is MxOutcome.INSECURE for o in outcomes):
        return DomainFate.REFUSED_INSECURE
    if MxOutcome.TEMPORARY in outcomes or not outcomes:
        return DomainFate.DEFERRED
    if MxOutcome.PERMANENT in outcomes and MxOutcome.INSECURE not in outcomes:
        return DomainFate.BOUNCED
    return DomainFate.REFUSED_INSECURE
