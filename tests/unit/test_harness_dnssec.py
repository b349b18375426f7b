"""Signed test zones, validated by a real unbound: what DANE tests rely on.

RFC 4035 §3.2.3 (AD only for authenticated data), §5.5 (bogus: SERVFAIL), §3.1.3 (NSEC
proofs for NODATA and NXDOMAIN), §5.2 (an insecure delegation: NSEC without DS),
RFC 7672 §2.2 (TLSA at ``_25._tcp.<mx host>``), RFC 3225 (the DO bit).
"""

from __future__ import annotations

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.harness.dnssec import BOGUS_KINDS, SignedZoneDns
from tests.harness.unbound import ValidatingResolver

SPKI_HASH = "8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"


def ask(host: str, port: int, name: str, rdtype: str, dnssec: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
    response, _ = dns.query.udp_with_fallback(query, host, port=port, timeout=5.0)
    return response


def through(resolver: ValidatingResolver, name: str, rdtype: str) -> dns.message.Message:
    return ask(resolver.host, resolver.port, name, rdtype)


def authenticated(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AD)


def rdatas(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(r.to_text() for rrset in response.answer if rrset.rdtype == wanted for r in rrset)


@pytest.fixture
def zone(signed_dns: SignedZoneDns) -> SignedZoneDns:
    """``dnssec.test`` as a DANE recipient domain: MX, its address, its TLSA."""
    signed_dns.add("dnssec.test", "MX", "10 mx.dnssec.test.")
    signed_dns.add("mx.dnssec.test", "A", "127.0.0.2")
    signed_dns.add("_25._tcp.mx.dnssec.test", "TLSA", f"3 1 1 {SPKI_HASH}")
    return signed_dns


def test_signed_mx_a_and_tlsa_carry_ad(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    mx = through(validating_resolver, "dnssec.test", "MX")
    a = through(validating_resolver, "mx.dnssec.test", "A")
    assert rdatas(mx, "MX") == ["10 mx.dnssec.test."]
    assert rdatas(a, "A") == ["127.0.0.2"]
    assert authenticated(mx) and authenticated(a)
    assert rdatas(mx, "RRSIG"), "a DO query gets the signatures too"


def test_tlsa_3_1_1_at_port_25_is_served_and_validated(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    response = through(validating_resolver, "_25._tcp.mx.dnssec.test", "TLSA")
    assert response.rcode() == dns.rcode.NOERROR and authenticated(response)
    [tlsa] = [r for rrset in response.answer if rrset.rdtype == dns.rdatatype.TLSA for r in rrset]
    assert (tlsa.usage, tlsa.selector, tlsa.mtype) == (3, 1, 1)
    assert tlsa.cert.hex() == SPKI_HASH


def test_large_signed_answer_is_validated_over_tcp(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    """40 TLSA records and their RRSIG exceed a 1232-byte UDP payload (RFC 7766)."""
    for index in range(40):
        zone.add("_25._tcp.mx.dnssec.test", "TLSA", f"3 1 1 {index:064x}")
    query = dns.message.make_query("_25._tcp.mx.dnssec.test", "TLSA", want_dnssec=True)
    query.use_edns(0, dns.flags.DO, 1232)
    response, used_tcp = dns.query.udp_with_fallback(
        query, validating_resolver.host, port=validating_resolver.port, timeout=5.0
    )
    assert used_tcp and authenticated(response)
    assert len(rdatas(response, "TLSA")) == 41
    assert ("_25._tcp.mx.dnssec.test", "TLSA") in zone.queries


def test_dnspython_resolver_sees_ad_with_do_set(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    """How a client (Secumail's ``dns.nameservers``) reads the AD bit."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [validating_resolver.host]
    res.port = validating_resolver.port
    res.use_edns(0, dns.flags.DO, 1232)
    answer = res.resolve("_25._tcp.mx.dnssec.test", "TLSA")
    assert answer.response.flags & dns.flags.AD


def test_nodata_is_validated(zone: SignedZoneDns, validating_resolver: ValidatingResolver) -> None:
    for name, rdtype in [("mx.dnssec.test", "TLSA"), ("_tcp.mx.dnssec.test", "A")]:
        response = through(validating_resolver, name, rdtype)  # the second: an empty non-terminal
        assert response.rcode() == dns.rcode.NOERROR, name
        assert response.answer == [], name
        assert authenticated(response), name


def test_nxdomain_is_validated(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    for name in ["nope.dnssec.test", "a.b.mx.dnssec.test", "zzz.dnssec.test"]:
        response = through(validating_resolver, name, "A")
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert authenticated(response), name


def test_record_added_during_test_is_seen_next_query(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    assert through(validating_resolver, "mx2.dnssec.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert through(validating_resolver, "mx.dnssec.test", "AAAA").answer == []
    zone.add("mx2.dnssec.test", "A", "127.0.0.3")
    zone.add("mx.dnssec.test", "AAAA", "::1")
    added = through(validating_resolver, "mx2.dnssec.test", "A")
    assert rdatas(added, "A") == ["127.0.0.3"] and authenticated(added)
    assert rdatas(through(validating_resolver, "mx.dnssec.test", "AAAA"), "AAAA") == ["::1"]
    zone.remove("mx2.dnssec.test")
    gone = through(validating_resolver, "mx2.dnssec.test", "A")
    assert gone.rcode() == dns.rcode.NXDOMAIN and authenticated(gone)


def test_cname_inside_the_signed_zone_is_validated(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    zone.add("www.dnssec.test", "CNAME", "mx.dnssec.test.")
    response = through(validating_resolver, "www.dnssec.test", "A")
    assert rdatas(response, "A") == ["127.0.0.2"] and authenticated(response)


@pytest.mark.parametrize("how", BOGUS_KINDS)
def test_bogus_name_gets_servfail(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver, how: str
) -> None:
    zone.add("bad.dnssec.test", "A", "127.0.0.9")
    zone.bogus("bad.dnssec.test", how)
    assert through(validating_resolver, "bad.dnssec.test", "A").rcode() == dns.rcode.SERVFAIL
    assert "validation failure <bad.dnssec.test. A IN>" in validating_resolver.log_file.read_text()
    assert authenticated(through(validating_resolver, "mx.dnssec.test", "A")), "others unharmed"
    zone.heal("bad.dnssec.test")
    assert authenticated(through(validating_resolver, "bad.dnssec.test", "A"))


def test_bogus_apex_breaks_the_whole_child_zone(
    signed_dns: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    signed_dns.add_zone("example.dnssec.test")
    signed_dns.add("mx.example.dnssec.test", "A", "127.0.0.4")
    assert authenticated(through(validating_resolver, "mx.example.dnssec.test", "A"))
    signed_dns.bogus("example.dnssec.test", "unknown-key")  # its DNSKEY RRset no longer verifies
    broken = through(validating_resolver, "mx.example.dnssec.test", "A")
    assert broken.rcode() == dns.rcode.SERVFAIL
    signed_dns.heal("example.dnssec.test")
    assert authenticated(through(validating_resolver, "mx.example.dnssec.test", "A"))


def test_insecure_delegation_answers_without_ad(
    signed_dns: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    signed_dns.add_zone("insecure.dnssec.test", signed=False)
    signed_dns.add("insecure.dnssec.test", "MX", "10 mx.insecure.dnssec.test.")
    signed_dns.add("mx.insecure.dnssec.test", "A", "127.0.0.5")
    for name, rdtype, value in [
        ("insecure.dnssec.test", "MX", "10 mx.insecure.dnssec.test."),
        ("mx.insecure.dnssec.test", "A", "127.0.0.5"),
    ]:
        response = through(validating_resolver, name, rdtype)
        assert rdatas(response, rdtype) == [value]
        assert not authenticated(response), name
    proof = through(validating_resolver, "insecure.dnssec.test", "DS")
    assert proof.answer == [] and authenticated(proof), "the absent DS is itself proven"


def test_signed_child_zone_validates_through_its_ds(
    signed_dns: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    signed_dns.add_zone("example.dnssec.test")
    signed_dns.add("example.dnssec.test", "MX", "10 mx.example.dnssec.test.")
    assert authenticated(through(validating_resolver, "example.dnssec.test", "MX"))
    assert authenticated(through(validating_resolver, "example.dnssec.test", "DS"))


def test_unsigned_test_names_still_resolve_without_ad(
    signed_dns: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    signed_dns.add("example.test", "MX", "10 mx.example.test.")
    response = through(validating_resolver, "example.test", "MX")
    assert rdatas(response, "MX") == ["10 mx.example.test."]
    assert not authenticated(response)


def test_names_outside_the_test_zones_are_refused_locally(
    signed_dns: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    signed_dns.queries.clear()
    for name in ["example.com", "."]:
        assert through(validating_resolver, name, "A").rcode() == dns.rcode.REFUSED
    assert signed_dns.queries == []


def test_authoritative_signatures_verify_and_need_do(zone: SignedZoneDns) -> None:
    """The server on its own: RRSIGs only with DO, and they verify against the DNSKEY."""
    host, port = zone.host, zone.port
    plain = ask(host, port, "mx.dnssec.test", "A", dnssec=False)
    assert [rrset.rdtype for rrset in plain.answer] == [dns.rdatatype.A]
    keys = ask(host, port, "dnssec.test", "DNSKEY").find_rrset(
        dns.message.ANSWER, dns.name.from_text("dnssec.test"), "IN", "DNSKEY"
    )
    signed = ask(host, port, "mx.dnssec.test", "A")
    rrset, rrsig = signed.answer
    dns.dnssec.validate(rrset, rrsig, {keys.name: keys})
    nx = ask(host, port, "nope.dnssec.test", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    nsecs = [r for r in nx.authority if r.rdtype == dns.rdatatype.NSEC]
    assert len(nsecs) == 2  # one covers the name, one the wildcard at its closest encloser
    assert zone.trust_anchors[0].startswith("dnssec.test. DS ")


def test_clear_keeps_the_trust_anchor_and_forgets_the_rest(
    zone: SignedZoneDns, validating_resolver: ValidatingResolver
) -> None:
    """For a longer-lived server: `clear` between tests, the resolver needs no restart."""
    anchors = zone.trust_anchors
    zone.add_zone("example.dnssec.test")
    zone.bogus("mx.dnssec.test")
    zone.clear()
    assert zone.trust_anchors == anchors and zone.zones == ["dnssec.test."]
    gone = through(validating_resolver, "mx.dnssec.test", "A")
    assert gone.rcode() == dns.rcode.NXDOMAIN and authenticated(gone)
    zone.add("mx.dnssec.test", "A", "127.0.0.2")
    assert authenticated(through(validating_resolver, "mx.dnssec.test", "A"))
