"""The secure-route decision for one recipient domain, as data (sans-I/O).

The whole decision lives here, as pure functions over plain inputs; the I/O (DNS, the
MTA-STS fetch, the operator's strategies and the route memory in the store) is
`pipeline.route_planner`, which gathers the facts and asks:

- `choose_strategy()`: the operator's override — recipient domain, else account, else
  the strict default;
- `route_terms()`: that strategy as the sender's account and message adjust it
  (relaxed TLS, RFC 8689 REQUIRETLS and "TLS-Required: No"); the resulting `RouteTerms`
  also say what is worth looking up (`wants_sts()`, `wants_tlsa()`);
- `plan()`: per MX host, from what DNS and MTA-STS said, how it may be reached.

`plan()` tries, per MX host:

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
a temporary failure rather than a silent downgrade. A null MX (RFC 7505) plans nothing.

`conclude()` turns what happened at each MX into the recipient's fate:
- a transaction took place over a secure route → the remote server's replies decide;
- every MX was reached and none offered a secure route → refused_insecure, at once;
- otherwise (some MX unreachable or answering 4xx) → deferred, to be retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

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
    null_mx: bool = False  # RFC 7505: the domain accepts no mail


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the sender's account allows and the message asks of the route.

    RFC 8689: ``requiretls`` is the REQUIRETLS MAIL FROM parameter (§4), ``tls_required_no``
    the "TLS-Required: No" header field (§4.2.1). ``from_gateway``: the gateway's own mail,
    which has no account (TLS reports carry "TLS-Required: No", RFC 8460 §5.1).
    """

    account_allows_relaxed: bool = False
    from_gateway: bool = False
    tls_required_no: bool = False
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class RouteTerms:
    """The terms one message is routed on: the operator's strategy as the sender's request
    adjusts it. They say what is worth looking up and what `plan()` may choose."""

    strategy: TlsStrategy = TlsStrategy()
    relaxed_allowed: bool = False  # a route below verified TLS may be chosen
    requiretls: bool = False  # RFC 8689 §5: only an MX from DNSSEC or MTA-STS
    use_memory: bool = True  # the downgrade memory applies

    def wants_sts(self, *, null_mx: bool) -> bool:
        """Is the MTA-STS policy worth fetching? Not when disabled, nor for a null MX."""
        return self.strategy.mta_sts is not Level.DISABLE and not null_mx

    def wants_tlsa(self, *, mx_secure: bool, addresses_secure: bool) -> bool:
        """RFC 7672 §2.2: TLSA records count only on a fully validated path (MX and
        address answers DNSSEC-secure), and not at all where DANE is disabled."""
        return self.strategy.dane is not Level.DISABLE and mx_secure and addresses_secure


def choose_strategy(for_domain: TlsStrategy | None, for_account: TlsStrategy | None) -> TlsStrategy:
    """The most specific override: recipient domain, else account, else the strict default."""
    return for_domain or for_account or TlsStrategy()


def route_terms(strategy: TlsStrategy, request: RouteRequest) -> RouteTerms:
    """Below verified TLS only where the account allows it, or for the gateway's own mail
    marked "TLS-Required: No"; never for a REQUIRETLS message (RFC 8689 §4, §5)."""
    may_relax = (
        request.account_allows_relaxed or (request.from_gateway and request.tls_required_no)
    ) and not request.requiretls
    if request.tls_required_no and may_relax:
        # RFC 8689 §4.2.1: the sender asks that recipient TLS policies be ignored.
        strategy = replace(
            strategy, dane=Level.DISABLE, mta_sts=Level.DISABLE, starttls=Level.OPTIONAL
        )
    return RouteTerms(
        strategy,
        relaxed_allowed=may_relax and strategy.relaxes,
        requiretls=request.requiretls,
        # "TLS-Required: No" sets the downgrade memory aside only where it is honoured
        # (RFC 8689 §4.2.1 for senders allowed to relax): from any other sender the header
        # changes nothing, so it cannot switch off downgrade protection either.
        use_memory=not (request.tls_required_no and may_relax),
    )


def null_mx_refusal(domain: str) -> tuple[str, str]:
    """The reply and enhanced code for recipients at a domain that publishes a null MX
    (RFC 7505 §3: it accepts no mail; §4.2: 556 5.1.10)."""
    return f"556 5.1.10 Domain {domain} does not accept mail (null MX, RFC 7505)", "5.1.10"


def plan(
    domain: str,
    mx_hosts: list[tuple[int, str]],
    *,
    mx_secure: bool,
    hosts: dict[str, HostDns],
    sts: StsPolicy | None,
    terms: RouteTerms = RouteTerms(),
    remembered: RouteMethod | None = None,
    null_mx: bool = False,
) -> RoutePlan:
    """The route per MX, in preference order; MX hosts that may not be used, and why.

    ``mx_hosts`` is the MX set as (preference, host) in the order to try: lowest
    preference first, equal preferences shuffled (RFC 5321 §5.1; `net.dns` orders them),
    kept as given; for a domain without MX records, the domain itself (implicit MX, §5.1).
    ``hosts`` holds what DNS said about each; ``sts`` the MTA-STS policy in force (cached
    or fresh, any mode); ``remembered`` the strongest method seen for the domain.
    """
    if null_mx:
        # RFC 7505 §3: a single MX "." means the domain accepts no mail; nothing to route.
        return RoutePlan(domain, null_mx=True)
    result = RoutePlan(domain)
    strategy = terms.strategy
    # RFC 8461 §5: only "enforce" binds; "testing" and "none" fall through to the baseline.
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
            relaxed_allowed=terms.relaxed_allowed,
        )
        if route is not None and terms.requiretls and not _requiretls_ok(route, mx_secure):
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
    if terms.use_memory and remembered is not None:
        offered = _offered(hosts, mx_secure=mx_secure, enforce=enforce)
        result.downgrade = _downgrade(domain, remembered, offered, strategy)
    return result


def _downgrade(
    domain: str, remembered: RouteMethod, offered: RouteMethod, strategy: TlsStrategy
) -> str:
    """Why a weaker offer than remembered is refused for now; "" when it is not weaker.

    The downgrade memory (docs/security.md): once a domain was reached over DANE or
    MTA-STS, an attacker who strips its DNSSEC or its policy gets a delay, not a weaker
    connection. An operator who disabled that method for the domain has decided otherwise.
    """
    if not remembered.authenticated or _overridden(remembered, strategy):
        return ""
    if offered.strength >= remembered.strength:
        return ""
    return (
        f"{domain} offered {remembered.value} before and now only {offered.value}: refusing "
        "a possible downgrade until an operator clears it or the memory expires"
    )


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
