"""The secure-route decision (`mail.secure_route`), one line per case.

Each row of `CASES` is a world (the MX set, what DNS said about each MX host, the
MTA-STS policy, the operator's strategy, what the account and message ask, the
remembered route) and the plan it must give, written as

    "<mx> <method>"           the MX is tried over that route (in this order)
    "<mx> ✗<result-type>"     the MX may not be used; RFC 8460 result type, "dns" for an
                              address lookup problem; "(temp)" when it may pass later
    "downgrade"               a weaker route than remembered: defer the domain
    "null-mx"                 the domain accepts no mail

MX hosts are written without ".d.test"; "@" is the domain itself (the implicit MX).

Standards: RFC 7672 (SMTP DANE) §2.1, §2.2, §3.1.3; RFC 8461 (MTA-STS) §4.1, §5;
RFC 8689 (REQUIRETLS) §4, §4.2.1, §5; RFC 7505 (null MX) §3; RFC 5321 §5.1 (MX order,
as the resolver gives it; implicit MX).
"""

# ruff: noqa: E501  (the tables keep one case per line)
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from secumail.mail.mta_sts import StsMode, StsPolicy
from secumail.mail.secure_route import (
    HostDns,
    Level,
    MxRoute,
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

DOMAIN = "d.test"
IP = ("192.0.2.25",)
EE = TlsaRecord(3, 1, 1, bytes(range(32)))  # DANE-EE SPKI SHA-256
TA = TlsaRecord(2, 0, 1, bytes(32))  # DANE-TA
PKIX = TlsaRecord(1, 1, 1, bytes(32))  # PKIX-EE: unusable for SMTP (RFC 7672 §3.1.3)

# What DNS said about one MX host, by the name a row gives it ("10 mx1 tlsa").
PLAIN = HostDns(IP)  # unsigned zone (a host without a word in the row)
SIGNED = HostDns(IP, addresses_secure=True)  # signed zone, no TLSA records
TLSA = HostDns(IP, True, (EE,), tlsa_secure=True)  # signed, usable TLSA
BOGUS = HostDns(IP, True, tlsa_failure="SERVFAIL (DNSSEC bogus)")
NXHOST = HostDns(lookup_failure="no such host (NXDOMAIN)", lookup_permanent=True)
TIMEOUT = HostDns(lookup_failure="DNS timeout")
NOADDR = HostDns()
FACTS = {
    "plain": PLAIN,
    "signed": SIGNED,
    "tlsa": TLSA,
    "tlsa-ta": HostDns(IP, True, (TA,), tlsa_secure=True),
    "tlsa-unsigned": HostDns(IP, False, (EE,), tlsa_secure=False),  # TLSA in an unsigned zone
    "tlsa-insecure": HostDns(IP, True, (EE,), tlsa_secure=False),  # the TLSA answer unsigned
    "tlsa-pkix": HostDns(IP, True, (PKIX,), tlsa_secure=True),  # only PKIX usages
    "bogus": BOGUS,
    "nxdomain": NXHOST,
    "timeout": TIMEOUT,
    "no-address": NOADDR,
}

# MTA-STS policies (RFC 8461 §3.2).
ENFORCE = StsPolicy(StsMode.ENFORCE, ("mx1.d.test",), 86400, "id1")
ENFORCE_WILD = StsPolicy(StsMode.ENFORCE, ("*.d.test",), 86400, "id1")
TESTING = StsPolicy(StsMode.TESTING, ("mx1.d.test",), 86400, "id1")
NONE = StsPolicy(StsMode.NONE, (), 86400, "id1")

# Operator strategies.
STRICT = TlsStrategy()
DANE_REQ = TlsStrategy(dane=Level.REQUIRE)
DANE_OFF = TlsStrategy(dane=Level.DISABLE)
STS_REQ = TlsStrategy(mta_sts=Level.REQUIRE)
STS_OFF = TlsStrategy(mta_sts=Level.DISABLE)
TLS13 = TlsStrategy(min_tls="TLSv1.3")
STARTTLS_OPT = TlsStrategy(starttls=Level.OPTIONAL)

# What the account and the message ask.
ACCOUNT = RouteRequest()
RELAXED_ACCOUNT = RouteRequest(account_allows_relaxed=True)
TRN = RouteRequest(tls_required_no=True)  # "TLS-Required: No", account may not relax
RELAXED_TRN = RouteRequest(account_allows_relaxed=True, tls_required_no=True)
GATEWAY = RouteRequest(from_gateway=True)
GATEWAY_TRN = RouteRequest(from_gateway=True, tls_required_no=True)  # a TLS report
REQTLS = RouteRequest(requiretls=True)
RELAXED_REQTLS = RouteRequest(account_allows_relaxed=True, requiretls=True)
RELAXED_TRN_REQTLS = RouteRequest(
    account_allows_relaxed=True, tls_required_no=True, requiretls=True
)

DANE, STS, VERIFIED = RouteMethod.DANE, RouteMethod.MTA_STS, RouteMethod.VERIFIED


def fqdn(name: str) -> str:
    return DOMAIN if name == "@" else f"{name}.{DOMAIN}"


def short(host: str) -> str:
    return "@" if host == DOMAIN else host.removesuffix(f".{DOMAIN}")


@dataclass(frozen=True)
class World:
    mx: str  # "10 mx1 tlsa, 20 mx2": preference, host, what DNS said of it (FACTS)
    hosts: dict[str, HostDns] = field(default_factory=dict)  # or given here
    secure: bool = False  # the MX answer is DNSSEC-validated
    sts: StsPolicy | None = None
    strategy: TlsStrategy = STRICT
    request: RouteRequest = ACCOUNT
    remembered: RouteMethod | None = None
    null_mx: bool = False

    def plan(self) -> RoutePlan:
        mx: list[tuple[int, str]] = []
        hosts: dict[str, HostDns] = {}
        for entry in filter(None, (e.split() for e in self.mx.split(","))):
            preference, name, *fact = entry
            mx.append((int(preference), fqdn(name)))
            hosts[fqdn(name)] = self.hosts.get(name) or FACTS[fact[0] if fact else "plain"]
        return plan(
            DOMAIN,
            mx,
            mx_secure=self.secure,
            hosts=hosts,
            sts=self.sts,
            terms=route_terms(self.strategy, self.request),
            remembered=self.remembered,
            null_mx=self.null_mx,
        )


def summary(p: RoutePlan) -> str:
    out = []
    for r in p.routes:
        tls = "" if r.min_tls == "TLSv1.2" else f" {r.min_tls}"
        out.append(f"{short(r.host)} {r.method}{tls}")
    for x in p.rejected:
        temp = " (temp)" if x.temporary else ""
        out.append(f"{short(x.host)} ✗{x.result_type or 'dns'}{temp}")
    if p.downgrade:
        out.append("downgrade")
    if p.null_mx:
        out.append("null-mx")
    return ", ".join(out) or "nothing"


def case(why: str, world: World, expect: str) -> object:
    return pytest.param(world, expect, id=why)


W = World
# fmt: off
CASES = [
    # -- DANE (RFC 7672) ------------------------------------------------------------------------------
    case("7672 §2.2 signed MX+address, usable TLSA: DANE", W("10 mx1 tlsa", secure=True), "mx1 dane"),
    case("7672 §2.2 DANE-TA counts too", W("10 mx1 tlsa-ta", secure=True), "mx1 dane"),
    case("7672 §2.2 TLSA but address zone unsigned", W("10 mx1 tlsa-unsigned", secure=True), "mx1 verified"),
    case("7672 §2.2 TLSA but MX answer unsigned", W("10 mx1 tlsa"), "mx1 verified"),
    case("7672 §2.2 TLSA answer itself insecure", W("10 mx1 tlsa-insecure", secure=True), "mx1 verified"),
    case("7672 §3.1.3 only PKIX-EE records: unusable", W("10 mx1 tlsa-pkix", secure=True), "mx1 verified"),
    case("7672 §2.2 signed zone without TLSA", W("10 mx1 signed", secure=True), "mx1 verified"),
    case("7672 §2.2 TLSA lookup bogus: MX deferred", W("10 mx1 bogus", secure=True), "mx1 ✗dnssec-invalid (temp)"),
    case("7672 bogus on one MX, others still used", W("10 mx1 bogus, 20 mx2 tlsa", secure=True), "mx2 dane, mx1 ✗dnssec-invalid (temp)"),
    case("7672 DANE decided per MX", W("10 mx1 tlsa, 20 mx2 signed", secure=True), "mx1 dane, mx2 verified"),
    case("8461 §2 DANE before MTA-STS on the same MX", W("10 mx1 tlsa", secure=True, sts=ENFORCE), "mx1 dane"),
    case("8461 §2 DANE MX needs no MTA-STS listing", W("10 mx2 tlsa", secure=True, sts=ENFORCE), "mx2 dane"),
    # -- MTA-STS (RFC 8461) ---------------------------------------------------------------------------
    case("8461 §4.1 enforce, MX listed", W("10 mx1", sts=ENFORCE), "mx1 mta-sts"),
    case("8461 §4.1 enforce, wildcard matches one label", W("10 mx1, 20 mx2", sts=ENFORCE_WILD), "mx1 mta-sts, mx2 mta-sts"),
    case("8461 §4.1 wildcard does not match two labels", W("10 a.mx", sts=ENFORCE_WILD), "a.mx ✗validation-failure"),
    case("8461 §4.1 wildcard does not match the domain", W("0 @", sts=ENFORCE_WILD), "@ ✗validation-failure"),
    case("8461 §5 enforce, unlisted MX excluded", W("10 mx1, 20 mx2", sts=ENFORCE), "mx1 mta-sts, mx2 ✗validation-failure"),
    case("8461 §5 enforce, no MX listed: none usable", W("10 mx2, 20 mx3", sts=ENFORCE), "mx2 ✗validation-failure, mx3 ✗validation-failure"),
    case("8461 §5 testing: baseline, unlisted MX kept", W("10 mx1, 20 mx2", sts=TESTING), "mx1 verified, mx2 verified"),
    case("8461 §5 mode none: baseline", W("10 mx1", sts=NONE), "mx1 verified"),
    case("no policy, no DANE: verified TLS", W("10 mx1"), "mx1 verified"),
    # -- operator overrides (TlsStrategy) ---------------------------------------------------------------
    case("dane=require without TLSA", W("10 mx1 signed", secure=True, strategy=DANE_REQ), "mx1 ✗dane-required"),
    case("dane=require, unsigned zone", W("10 mx1", strategy=DANE_REQ), "mx1 ✗dane-required"),
    case("dane=require with usable TLSA", W("10 mx1 tlsa", secure=True, strategy=DANE_REQ), "mx1 dane"),
    case("dane=require, bogus TLSA: deferred, not refused", W("10 mx1 bogus", secure=True, strategy=DANE_REQ), "mx1 ✗dnssec-invalid (temp)"),
    case("dane=disable ignores TLSA", W("10 mx1 tlsa", secure=True, strategy=DANE_OFF), "mx1 verified"),
    case("dane=disable ignores bogus TLSA", W("10 mx1 bogus", secure=True, strategy=DANE_OFF), "mx1 verified"),
    case("dane=disable falls to MTA-STS", W("10 mx1 tlsa", secure=True, sts=ENFORCE, strategy=DANE_OFF), "mx1 mta-sts"),
    case("mta_sts=require without policy", W("10 mx1", strategy=STS_REQ), "mx1 ✗sts-policy-invalid"),
    case("mta_sts=require, policy only testing", W("10 mx1", sts=TESTING, strategy=STS_REQ), "mx1 ✗sts-policy-invalid"),
    case("mta_sts=require, enforce policy", W("10 mx1", sts=ENFORCE, strategy=STS_REQ), "mx1 mta-sts"),
    case("mta_sts=require, DANE MX is enough", W("10 mx1 tlsa", secure=True, strategy=STS_REQ), "mx1 dane"),
    case("mta_sts=disable ignores an enforce policy", W("10 mx1, 20 mx2", sts=ENFORCE, strategy=STS_OFF), "mx1 verified, mx2 verified"),
    case("min_tls carried on every route", W("10 mx1 tlsa, 20 mx2, 30 mx3", secure=True, strategy=TLS13), "mx1 dane TLSv1.3, mx2 verified TLSv1.3, mx3 verified TLSv1.3"),
    case("min_tls carried on MTA-STS routes", W("10 mx1", sts=ENFORCE, strategy=TLS13), "mx1 mta-sts TLSv1.3"),
    # -- relaxed TLS: strategy relaxes AND the account allows it ----------------------------------------
    case("starttls=optional, account not allowed", W("10 mx1", strategy=STARTTLS_OPT), "mx1 verified"),
    case("account allowed, strategy strict", W("10 mx1", request=RELAXED_ACCOUNT), "mx1 verified"),
    case("account allowed, starttls=optional", W("10 mx1", strategy=STARTTLS_OPT, request=RELAXED_ACCOUNT), "mx1 relaxed"),
    case("starttls=disable relaxes too", W("10 mx1", strategy=TlsStrategy(starttls=Level.DISABLE), request=RELAXED_ACCOUNT), "mx1 relaxed"),
    case("relaxed: DANE still first where published", W("10 mx1 tlsa, 20 mx2", secure=True, strategy=STARTTLS_OPT, request=RELAXED_ACCOUNT), "mx1 dane, mx2 relaxed"),
    case("relaxed: MTA-STS enforce still binds", W("10 mx1, 20 mx2", sts=ENFORCE, strategy=STARTTLS_OPT, request=RELAXED_ACCOUNT), "mx1 mta-sts, mx2 ✗validation-failure"),
    case("gateway's own mail is not relaxed by default", W("10 mx1", strategy=STARTTLS_OPT, request=GATEWAY), "mx1 verified"),
    # -- TLS-Required: No (RFC 8689 §4.2.1) ------------------------------------------------------------------
    case("8689 §4.2.1 allowed account: DANE ignored", W("10 mx1 tlsa", secure=True, request=RELAXED_TRN), "mx1 relaxed"),
    case("8689 §4.2.1 allowed account: bogus TLSA ignored", W("10 mx1 bogus", secure=True, request=RELAXED_TRN), "mx1 relaxed"),
    case("8689 §4.2.1 allowed account: MTA-STS ignored", W("10 mx1, 20 mx2", sts=ENFORCE, request=RELAXED_TRN), "mx1 relaxed, mx2 relaxed"),
    case("8689 §4.2.1 overrides dane=require", W("10 mx1", strategy=DANE_REQ, request=RELAXED_TRN), "mx1 relaxed"),
    case("8689 §4.2.1 keeps the strategy's min_tls", W("10 mx1", strategy=TLS13, request=RELAXED_TRN), "mx1 relaxed TLSv1.3"),
    case("8689 §4.2.1 account not allowed: header ignored", W("10 mx1 tlsa", secure=True, request=TRN), "mx1 dane"),
    case("8689 §4.2.1 account not allowed: MTA-STS binds", W("10 mx1, 20 mx2", sts=ENFORCE, request=TRN), "mx1 mta-sts, mx2 ✗validation-failure"),
    case("8460 §5.1 gateway report with the header", W("10 mx1 tlsa", secure=True, request=GATEWAY_TRN), "mx1 relaxed"),
    # -- REQUIRETLS (RFC 8689 §5) ------------------------------------------------------------------------------
    case("8689 §5 MX from unsigned DNS, no policy", W("10 mx1", request=REQTLS), "mx1 ✗validation-failure"),
    case("8689 §5 MX from DNSSEC: verified is enough", W("10 mx1 signed", secure=True, request=REQTLS), "mx1 verified"),
    case("8689 §5 MX from an MTA-STS policy", W("10 mx1", sts=ENFORCE, request=REQTLS), "mx1 mta-sts"),
    case("8689 §5 testing policy does not vouch for the MX", W("10 mx1", sts=TESTING, request=REQTLS), "mx1 ✗validation-failure"),
    case("8689 §5 DANE MX", W("10 mx1 tlsa", secure=True, request=REQTLS), "mx1 dane"),
    case("8689 §5 unsigned MX set: TLSA does not help", W("10 mx1 tlsa, 20 mx2", request=REQTLS), "mx1 ✗validation-failure, mx2 ✗validation-failure"),
    case("8689 §4 REQUIRETLS forbids relaxing", W("10 mx1 signed", secure=True, strategy=STARTTLS_OPT, request=RELAXED_REQTLS), "mx1 verified"),
    case("8689 §4 REQUIRETLS beats TLS-Required: No", W("10 mx1 tlsa", secure=True, request=RELAXED_TRN_REQTLS), "mx1 dane"),
    # -- downgrade memory -----------------------------------------------------------------------------------
    case("remembered DANE, DANE still there", W("10 mx1 tlsa", secure=True, remembered=DANE), "mx1 dane"),
    case("remembered DANE, TLSA gone: downgrade", W("10 mx1 signed", secure=True, remembered=DANE), "mx1 verified, downgrade"),
    case("remembered DANE, zone now unsigned: downgrade", W("10 mx1", remembered=DANE), "mx1 verified, downgrade"),
    case("remembered DANE, only MTA-STS now: downgrade", W("10 mx1", sts=ENFORCE, remembered=DANE), "mx1 mta-sts, downgrade"),
    case("remembered DANE, TLSA bogus: downgrade", W("10 mx1 bogus", secure=True, remembered=DANE), "mx1 ✗dnssec-invalid (temp), downgrade"),
    case("remembered DANE, one MX still DANE: no downgrade", W("10 mx1, 20 mx2 tlsa", secure=True, remembered=DANE), "mx1 verified, mx2 dane"),
    case("remembered DANE, one MX gone, the other DANE", W("10 mx1 nxdomain, 20 mx2 tlsa", secure=True, remembered=DANE), "mx2 dane, mx1 ✗dns"),
    case("remembered MTA-STS, policy now testing: downgrade", W("10 mx1", sts=TESTING, remembered=STS), "mx1 verified, downgrade"),
    case("remembered MTA-STS, policy gone: downgrade", W("10 mx1", remembered=STS), "mx1 verified, downgrade"),
    case("remembered MTA-STS, no MX listed: refused, no downgrade", W("10 mx2", sts=ENFORCE, remembered=STS), "mx2 ✗validation-failure"),
    case("remembered MTA-STS, now DANE: stronger", W("10 mx1 tlsa", secure=True, remembered=STS), "mx1 dane"),
    case("remembered verified: nothing weaker to refuse", W("10 mx1", remembered=VERIFIED), "mx1 verified"),
    case("remembered relaxed: not a protection", W("10 mx1", remembered=RouteMethod.RELAXED), "mx1 verified"),
    case("remembered DANE, operator dane=disable", W("10 mx1", strategy=DANE_OFF, remembered=DANE), "mx1 verified"),
    case("remembered MTA-STS, operator mta_sts=disable", W("10 mx1", strategy=STS_OFF, remembered=STS), "mx1 verified"),
    case("remembered DANE, mta_sts=disable is no excuse", W("10 mx1", strategy=STS_OFF, remembered=DANE), "mx1 verified, downgrade"),
    case("remembered MTA-STS, policy ignored (disabled) wins", W("10 mx1", sts=ENFORCE, strategy=STS_OFF, remembered=STS), "mx1 verified"),
    case("remembered DANE, relaxed account still refused", W("10 mx1", strategy=STARTTLS_OPT, request=RELAXED_ACCOUNT, remembered=DANE), "mx1 relaxed, downgrade"),
    case("remembered DANE, TLS-Required: No (allowed)", W("10 mx1", request=RELAXED_TRN, remembered=DANE), "mx1 relaxed"),
    # Current behaviour: the header sets the memory aside even where the account may not relax.
    case("remembered DANE, TLS-Required: No (not allowed): downgrade", W("10 mx1", request=TRN, remembered=DANE), "mx1 verified, downgrade"),
    # -- MX order (RFC 5321 §5.1) ------------------------------------------------------------------------------
    case("5321 §5.1 tried in the order given (lowest preference first)", W("10 mx1, 20 mx2, 30 mx3"), "mx1 verified, mx2 verified, mx3 verified"),
    case("5321 §5.1 equal preferences: the resolver's shuffle kept", W("10 mxb, 10 mxa"), "mxb verified, mxa verified"),
    case("5321 §5.1 each MX decided in place", W("10 mx1, 20 mx2 tlsa, 30 mx3 signed", secure=True), "mx1 verified, mx2 dane, mx3 verified"),
    case("5321 §5.1 rejected MX listed after the routes", W("10 mx1 nxdomain, 20 mx2"), "mx2 verified, mx1 ✗dns"),
    # -- address lookups ---------------------------------------------------------------------------------------
    case("MX host does not exist: permanent", W("10 mx1 nxdomain"), "mx1 ✗dns"),
    case("MX host lookup timed out: temporary", W("10 mx1 timeout"), "mx1 ✗dns (temp)"),
    case("MX host without A/AAAA: permanent", W("10 mx1 no-address"), "mx1 ✗dns"),
    case("address failure comes before any policy", W("10 mx1 nxdomain", strategy=DANE_REQ, sts=ENFORCE), "mx1 ✗dns"),
    # -- null MX (RFC 7505) and implicit MX (RFC 5321 §5.1) ------------------------------------------------------
    case("7505 §3 null MX: nothing to route", W("", null_mx=True), "null-mx"),
    case("7505 §3 null MX: no downgrade either", W("", null_mx=True, remembered=DANE), "null-mx"),
    case("5321 §5.1 implicit MX: the domain itself", W("0 @"), "@ verified"),
    case("5321 §5.1 implicit MX without address", W("0 @ no-address"), "@ ✗dns"),
    case("5321 §5.1 implicit MX with DANE", W("0 @ tlsa", secure=True), "@ dane"),
    case("5321 §5.1 implicit MX under MTA-STS", W("0 @", sts=StsPolicy(StsMode.ENFORCE, ("d.test",), 86400, "id1")), "@ mta-sts"),
    case("no MX and nothing else: nothing planned", W(""), "nothing"),
]
# fmt: on


@pytest.mark.parametrize(("world", "expect"), CASES)
def test_plan(world: World, expect: str) -> None:
    assert summary(world.plan()) == expect


# The texts a sender reads in its refusal or deferral notice, and what the attempt record
# and the TLS report (RFC 8460 §4.3) carry: they must not change.
# fmt: off
REASONS = [
    case("NXDOMAIN", W("10 mx1 nxdomain"), "mx1.d.test: no such host (NXDOMAIN)"),
    case("temporary DNS", W("10 mx1 timeout"), "mx1.d.test: DNS timeout"),
    case("no address", W("10 mx1 no-address"), "mx1.d.test: has no address records"),
    case("TLSA bogus", W("10 mx1 bogus", secure=True), "mx1.d.test: TLSA lookup failed (SERVFAIL (DNSSEC bogus))"),
    case("DANE required", W("10 mx1", strategy=DANE_REQ), "mx1.d.test: no DNSSEC-validated TLSA records, and DANE is required"),
    case("not in policy", W("10 mx2", sts=StsPolicy(StsMode.ENFORCE, ("mx1.d.test", "*.o.test"), 1, "i")), "mx2.d.test: not listed in the MTA-STS policy (mx: mx1.d.test, *.o.test)"),
    case("MTA-STS required", W("10 mx1", strategy=STS_REQ), "mx1.d.test: no MTA-STS policy in enforce mode, and MTA-STS is required"),
    case("REQUIRETLS", W("10 mx1", request=REQTLS), "mx1.d.test: REQUIRETLS needs an MX from DNSSEC-signed DNS or an MTA-STS policy"),
]
# fmt: on


@pytest.mark.parametrize(("world", "reason"), REASONS)
def test_refusal_reason(world: World, reason: str) -> None:
    p = world.plan()
    assert [r.reason for r in p.rejected] == [reason]
    assert p.routes == []


@pytest.mark.parametrize(
    ("world", "offered"),
    [
        (W("10 mx1 signed", secure=True, remembered=DANE), "verified"),
        (W("10 mx1", sts=ENFORCE, remembered=DANE), "mta-sts"),
        (W("10 mx1", sts=TESTING, remembered=STS), "verified"),
    ],
)
def test_downgrade_reason(world: World, offered: str) -> None:
    assert world.plan().downgrade == (
        f"d.test offered {world.remembered} before and now only {offered}: refusing a "
        "possible downgrade until an operator clears it or the memory expires"
    )


def test_dane_route_carries_only_usable_records() -> None:
    # RFC 7672 §3.1.3: PKIX-TA/PKIX-EE records are not used for SMTP.
    info = HostDns(IP, True, (PKIX, EE, TA), tlsa_secure=True)
    (route,) = W("10 mx1", {"mx1": info}, secure=True).plan().routes
    assert route == MxRoute("mx1.d.test", 10, DANE, (EE, TA))


def test_mta_sts_route_names_its_policy() -> None:
    (route,) = W("10 mx1", sts=ENFORCE).plan().routes
    assert route == MxRoute("mx1.d.test", 10, STS, policy_id="id1")


def test_routes_carry_their_preference() -> None:
    routes = W("10 mx1, 20 mx2 tlsa", secure=True).plan().routes
    assert [(r.host, r.preference) for r in routes] == [("mx1.d.test", 10), ("mx2.d.test", 20)]


def test_routes_are_pooled_per_method() -> None:
    # Connections are pooled per route: a verified connection never serves a DANE route.
    verified, dane = MxRoute("mx1.d.test", 10, VERIFIED), MxRoute("mx1.d.test", 10, DANE, (EE,))
    assert verified.policy_key.startswith("verified")
    assert verified.policy_key != dane.policy_key
    assert MxRoute("mx1.d.test", 10, VERIFIED, min_tls="TLSv1.3").policy_key != verified.policy_key


# -- the terms a message is routed on --------------------------------------------------------------
REQ, OPT, OFF = Level.REQUIRE, Level.OPTIONAL, Level.DISABLE

# strategy, request → the adjusted dane, mta_sts, starttls; relaxed allowed; memory used
# fmt: off
TERMS = [
    (STRICT,       ACCOUNT,            OPT, OPT, REQ, False, True),   # the strict default
    (STRICT,       RELAXED_ACCOUNT,    OPT, OPT, REQ, False, True),   # the strategy does not relax
    (STARTTLS_OPT, ACCOUNT,            OPT, OPT, OPT, False, True),   # the account does not allow it
    (STARTTLS_OPT, RELAXED_ACCOUNT,    OPT, OPT, OPT, True,  True),
    (STARTTLS_OPT, GATEWAY,            OPT, OPT, OPT, False, True),
    (STRICT,       RELAXED_TRN,        OFF, OFF, OPT, True,  False),  # RFC 8689 §4.2.1
    (DANE_REQ,     RELAXED_TRN,        OFF, OFF, OPT, True,  False),
    (STRICT,       GATEWAY_TRN,        OFF, OFF, OPT, True,  False),  # RFC 8460 §5.1 reports
    (STRICT,       TRN,                OPT, OPT, REQ, False, True),   # not allowed: the header changes nothing
    (STARTTLS_OPT, RELAXED_REQTLS,     OPT, OPT, OPT, False, True),   # RFC 8689 §4: never relaxed
    (STRICT,       RELAXED_TRN_REQTLS, OPT, OPT, REQ, False, True),   # REQUIRETLS wins: nothing relaxed
]
# fmt: on


@pytest.mark.parametrize(
    ("strategy", "request_", "dane", "mta_sts", "starttls", "relaxed", "memory"), TERMS
)
def test_route_terms(
    strategy: TlsStrategy,
    request_: RouteRequest,
    dane: Level,
    mta_sts: Level,
    starttls: Level,
    relaxed: bool,
    memory: bool,
) -> None:
    terms = route_terms(strategy, request_)
    assert (terms.strategy.dane, terms.strategy.mta_sts, terms.strategy.starttls) == (
        dane,
        mta_sts,
        starttls,
    )
    assert terms.strategy.min_tls == strategy.min_tls
    assert terms.relaxed_allowed is relaxed
    assert terms.use_memory is memory
    assert terms.requiretls is request_.requiretls


# strategy, null MX, MX answer signed, address answer signed → fetch MTA-STS, look up TLSA
# fmt: off
LOOKUPS = [
    (STRICT,   False, True,  True,  True,  True),
    (STRICT,   True,  True,  True,  False, True),   # RFC 7505: no policy to fetch
    (STRICT,   False, False, True,  True,  False),  # RFC 7672 §2.2: MX answer not validated
    (STRICT,   False, True,  False, True,  False),  # ... address answer not validated
    (DANE_OFF, False, True,  True,  True,  False),
    (STS_OFF,  False, True,  True,  False, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("strategy", "null_mx", "mx_secure", "addr_secure", "sts", "tlsa"), LOOKUPS
)
def test_what_is_worth_looking_up(
    strategy: TlsStrategy, null_mx: bool, mx_secure: bool, addr_secure: bool, sts: bool, tlsa: bool
) -> None:
    terms = RouteTerms(strategy)
    assert terms.wants_sts(null_mx=null_mx) is sts
    assert terms.wants_tlsa(mx_secure=mx_secure, addresses_secure=addr_secure) is tlsa


def test_tls_required_no_skips_recipient_lookups() -> None:
    # RFC 8689 §4.2.1 with an account that may relax: neither TLSA nor MTA-STS is needed.
    terms = route_terms(STRICT, RELAXED_TRN)
    assert not terms.wants_sts(null_mx=False)
    assert not terms.wants_tlsa(mx_secure=True, addresses_secure=True)


@pytest.mark.parametrize(
    ("for_domain", "for_account", "chosen"),
    [
        (None, None, STRICT),  # the strict default
        (None, STARTTLS_OPT, STARTTLS_OPT),
        (DANE_REQ, None, DANE_REQ),
        (DANE_REQ, STARTTLS_OPT, DANE_REQ),  # the recipient domain is more specific
    ],
)
def test_choose_strategy(
    for_domain: TlsStrategy | None, for_account: TlsStrategy | None, chosen: TlsStrategy
) -> None:
    assert choose_strategy(for_domain, for_account) == chosen
