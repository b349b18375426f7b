"""The route planner's I/O: it gathers the facts the decision needs — no more — and hands
them to `mail.secure_route`. A fake DNS world and store from maps; the decision itself is
tested in test_route_decision.py.

RFC 7672 §2.2 (TLSA only on a validated path; a failed TLSA lookup is not "no TLSA"),
RFC 8461 §3 (no policy fetch when MTA-STS cannot matter), RFC 8689 §4.2.1, RFC 7505.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from secumail.errors import DnsPermanentError, DnsTemporaryError
from secumail.mail.mta_sts import StsMode, StsPolicy
from secumail.mail.secure_route import Level, RouteMethod, TlsStrategy
from secumail.mail.tlsrpt import ResultType
from secumail.net.dns import MxAnswer, MxHost, TlsaAnswer
from secumail.pipeline.mta_sts_source import StsLookup
from secumail.pipeline.route_planner import DomainRoute, RoutePlanner
from secumail.store.records import Account
from secumail.store.routing import RouteMemory, TlsPolicyRow

EE = (3, 1, 1, bytes(32))


@dataclass
class FakeDns:
    answers: dict[str, MxAnswer]
    addresses: dict[str, tuple[list[str], bool] | Exception] = field(default_factory=dict)
    tlsa_records: dict[str, TlsaAnswer | Exception] = field(default_factory=dict)
    tlsa_asked: list[tuple[str, int]] = field(default_factory=list)

    async def mx(self, domain: str) -> MxAnswer:
        return self.answers[domain]

    async def addresses_secure(self, host: str) -> tuple[list[str], bool]:
        found = self.addresses.get(host, (["192.0.2.25"], False))
        if isinstance(found, Exception):
            raise found
        return found

    async def tlsa(self, host: str, port: int = 25) -> TlsaAnswer:
        self.tlsa_asked.append((host, port))
        found = self.tlsa_records.get(host, TlsaAnswer([], True))
        if isinstance(found, Exception):
            raise found
        return found


@dataclass
class FakeSts:
    policies: dict[str, StsPolicy] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def lookup(self, domain: str) -> StsLookup:
        self.asked.append(domain)
        return StsLookup(self.policies.get(domain))


@dataclass
class FakeRouting:
    policies: dict[tuple[str, str], TlsPolicyRow] = field(default_factory=dict)
    remembered: dict[str, str] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)

    async def tls_policy(self, scope: str, name: str) -> TlsPolicyRow | None:
        self.read.append(f"policy {scope}:{name}")
        return self.policies.get((scope, name))

    async def memory(self, domain: str) -> RouteMemory | None:
        self.read.append(f"memory {domain}")
        method = self.remembered.get(domain)
        return None if method is None else RouteMemory(domain, method, 0.0, 1e12)


def row(scope: str, name: str, **levels: str) -> TlsPolicyRow:
    return TlsPolicyRow(
        scope,
        name,
        levels.get("dane", "optional"),
        levels.get("mta_sts", "optional"),
        levels.get("starttls", "require"),
        levels.get("min_tls", "TLSv1.2"),
        0.0,
    )


def account(relaxed: bool = False) -> Account:
    return Account("acc1", "Hospital", "nl", None, False, 0.0, allow_relaxed_tls=relaxed)


SIGNED_MX = {"d.test": MxAnswer([MxHost(10, "mx1.d.test")], secure=True)}
SIGNED_HOST = {"mx1.d.test": (["192.0.2.25"], True)}


def route(
    dns: FakeDns,
    sts: FakeSts | None = None,
    routing: FakeRouting | None = None,
    *,
    acc: Account | None = None,
    **flags: bool,
) -> DomainRoute:
    planner = RoutePlanner(dns, sts or FakeSts(), routing or FakeRouting(), port=2525)  # type: ignore[arg-type]
    return asyncio.run(planner.route("d.test", account=acc or account(), **flags))


def test_dane_facts_are_gathered_on_a_validated_path() -> None:
    dns = FakeDns(SIGNED_MX, SIGNED_HOST, {"mx1.d.test": TlsaAnswer([EE], True)})
    r = route(dns)
    assert dns.tlsa_asked == [("mx1.d.test", 2525)]  # RFC 7672 §2.2: _<port>._tcp.<mx>
    assert [(m.host, m.method) for m in r.plan.routes] == [("mx1.d.test", RouteMethod.DANE)]


def test_no_tlsa_lookup_on_an_unsigned_path() -> None:
    dns = FakeDns({"d.test": MxAnswer([MxHost(10, "mx1.d.test")], secure=False)}, SIGNED_HOST)
    assert route(dns).plan.routes[0].method is RouteMethod.VERIFIED
    assert dns.tlsa_asked == []


def test_a_failed_tlsa_lookup_defers_the_mx() -> None:
    dns = FakeDns(SIGNED_MX, SIGNED_HOST, {"mx1.d.test": DnsTemporaryError("SERVFAIL")})
    (rejected,) = route(dns).plan.rejected
    assert rejected.reason == "mx1.d.test: TLSA lookup failed (SERVFAIL)"
    assert (rejected.temporary, rejected.result_type) == (True, ResultType.DNSSEC_INVALID)


def test_address_lookup_failures_become_rejections() -> None:
    answer = MxAnswer([MxHost(10, "mx1.d.test"), MxHost(20, "mx2.d.test")])
    dns = FakeDns(
        {"d.test": answer},
        {"mx1.d.test": DnsPermanentError("gone"), "mx2.d.test": DnsTemporaryError("timeout")},
    )
    plan = route(dns).plan
    assert [(x.reason, x.temporary) for x in plan.rejected] == [
        ("mx1.d.test: no such host (NXDOMAIN)", False),
        ("mx2.d.test: timeout", True),
    ]


def test_mta_sts_policy_is_fetched_and_enforced() -> None:
    sts = FakeSts({"d.test": StsPolicy(StsMode.ENFORCE, ("mx1.d.test",), 86400, "p1")})
    r = route(FakeDns({"d.test": MxAnswer([MxHost(10, "mx1.d.test")])}), sts)
    assert sts.asked == ["d.test"]
    assert r.plan.routes[0].method is RouteMethod.MTA_STS
    assert r.sts.policy is not None


def test_tls_required_no_from_an_allowed_account_looks_nothing_up() -> None:
    # RFC 8689 §4.2.1: recipient policies are ignored, so neither TLSA, MTA-STS nor the
    # downgrade memory is read; the strategy is read (its min_tls still holds).
    dns = FakeDns(SIGNED_MX, SIGNED_HOST, {"mx1.d.test": TlsaAnswer([EE], True)})
    sts, routing = FakeSts(), FakeRouting(remembered={"d.test": "dane"})
    r = route(dns, sts, routing, acc=account(relaxed=True), tls_required_no=True)
    assert (dns.tlsa_asked, sts.asked) == ([], [])
    assert routing.read == ["policy domain:d.test", "policy account:acc1"]
    assert r.plan.routes[0].method is RouteMethod.RELAXED
    assert (r.strategy.dane, r.strategy.mta_sts) == (Level.DISABLE, Level.DISABLE)
    assert not r.plan.downgrade


def test_null_mx_fetches_no_policy() -> None:
    sts = FakeSts()
    r = route(FakeDns({"d.test": MxAnswer([], null_mx=True)}), sts)
    assert sts.asked == []
    assert r.plan.null_mx
    assert r.plan.routes == r.plan.rejected == []


def test_domain_strategy_wins_and_the_account_row_is_then_not_read() -> None:
    routing = FakeRouting(
        {
            ("domain", "d.test"): row("domain", "d.test", dane="disable"),
            ("account", "acc1"): row("account", "acc1", dane="require"),
        }
    )
    dns = FakeDns(SIGNED_MX, SIGNED_HOST, {"mx1.d.test": TlsaAnswer([EE], True)})
    r = route(dns, routing=routing)
    assert r.strategy == TlsStrategy(dane=Level.DISABLE)
    assert "policy account:acc1" not in routing.read
    assert dns.tlsa_asked == []  # DANE disabled: no TLSA lookup
    assert r.plan.routes[0].method is RouteMethod.VERIFIED


def test_account_strategy_applies_without_a_domain_row() -> None:
    routing = FakeRouting({("account", "acc1"): row("account", "acc1", min_tls="TLSv1.3")})
    r = route(FakeDns({"d.test": MxAnswer([MxHost(10, "mx1.d.test")])}), routing=routing)
    assert r.plan.routes[0].min_tls == "TLSv1.3"


def test_remembered_route_is_read_and_a_downgrade_refused() -> None:
    routing = FakeRouting(remembered={"d.test": "mta-sts"})
    r = route(FakeDns({"d.test": MxAnswer([MxHost(10, "mx1.d.test")])}), routing=routing)
    assert r.plan.downgrade.startswith("d.test offered mta-sts before and now only verified")
