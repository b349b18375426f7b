"""The harness DNS server answers dnspython's resolver and raw queries as a real one would.

RFC 1034 §4.3.2 (answers, CNAME chasing), RFC 2308 (NXDOMAIN and NODATA carry the SOA),
RFC 8020 (empty non-terminals exist), RFC 7766 (TC over UDP, then TCP).
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.harness.dns import AuthoritativeDns


@pytest.fixture
def server(dns: AuthoritativeDns) -> AuthoritativeDns:  # the fixture would shadow `dns.*`
    dns.add("example.test", "MX", "10 mx1.example.test.")
    dns.add("example.test", "MX", "20 mx2.example.test")
    dns.add("mx1.example.test", "A", "127.0.0.2")
    dns.add("mx1.example.test", "AAAA", "::1")
    dns.add("www.example.test", "CNAME", "mx1.example.test.")
    dns.add("_secumail.example.test", "TXT", '"secumail-verification=abc"')
    return dns


def resolver(server: AuthoritativeDns) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.port = server.port
    res.nameservers = [server.host]
    res.lifetime = 5.0
    return res


def ask(server: AuthoritativeDns, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=5.0)


def test_answer_is_authoritative(server: AuthoritativeDns) -> None:
    answer = resolver(server).resolve("example.test", "MX")
    assert sorted(r.to_text() for r in answer) == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert answer.response.flags & dns.flags.AA
    assert answer.rrset is not None and answer.rrset.ttl == 60


def test_same_port_answers_over_tcp(server: AuthoritativeDns) -> None:
    response = ask(server, "mx1.example.test", "AAAA", tcp=True)
    assert [r.to_text() for r in response.answer[0]] == ["::1"]
    assert server.address == f"127.0.0.1:{server.port}"


def test_names_ignore_case_and_trailing_dot(server: AuthoritativeDns) -> None:
    server.add("Mixed.Example.TEST.", "A", "127.0.0.7")
    answer = resolver(server).resolve("mixed.example.test", "A")
    assert [r.to_text() for r in answer] == ["127.0.0.7"]


def test_txt_and_null_mx(server: AuthoritativeDns) -> None:
    server.add("nomail.test", "MX", "0 .")
    res = resolver(server)
    txt = res.resolve("_secumail.example.test", "TXT")
    assert [b"".join(r.strings) for r in txt] == [b"secumail-verification=abc"]
    null_mx = res.resolve("nomail.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in null_mx] == [(0, ".")]


def test_nodata_carries_soa(server: AuthoritativeDns) -> None:
    response = ask(server, "example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    with pytest.raises(dns.resolver.NoAnswer):
        resolver(server).resolve("example.test", "A")


def test_empty_non_terminal_is_nodata(server: AuthoritativeDns) -> None:
    server.add("a.b.c.example.test", "A", "127.0.0.9")
    response = ask(server, "b.c.example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []


def test_absent_name_is_nxdomain_with_soa(server: AuthoritativeDns) -> None:
    response = ask(server, "nothing.example.test", "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver(server).resolve("nothing.example.test", "MX")


def test_cname_is_chased_inside_the_data(server: AuthoritativeDns) -> None:
    answer = resolver(server).resolve("www.example.test", "A")
    assert answer.canonical_name.to_text() == "mx1.example.test."
    assert [r.to_text() for r in answer] == ["127.0.0.2"]
    cname_only = ask(server, "www.example.test", "CNAME")
    assert [rrset.rdtype for rrset in cname_only.answer] == [dns.rdatatype.CNAME]


def test_cname_to_absent_name_is_nxdomain(server: AuthoritativeDns) -> None:
    server.add("dangling.example.test", "CNAME", "gone.example.test.")
    response = ask(server, "dangling.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer[0].rdtype == dns.rdatatype.CNAME


def test_records_change_at_run_time(server: AuthoritativeDns) -> None:
    server.remove("mx1.example.test", "A")
    assert ask(server, "mx1.example.test", "A").answer == []
    assert ask(server, "mx1.example.test", "AAAA").answer != []
    server.remove("mx1.example.test")
    assert ask(server, "mx1.example.test", "AAAA").rcode() == dns.rcode.NXDOMAIN
    server.clear()
    assert ask(server, "example.test", "MX").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_failure_injection_and_heal(server: AuthoritativeDns, rcode: str) -> None:
    server.fail("example.test", rcode)
    assert ask(server, "example.test", "MX").rcode() == dns.rcode.from_text(rcode)
    assert ask(server, "mx1.example.test", "A").rcode() == dns.rcode.NOERROR
    server.heal("example.test")
    assert ask(server, "example.test", "MX").answer != []


def test_delay_makes_a_client_time_out_without_blocking_others(server: AuthoritativeDns) -> None:
    server.delay("example.test", 30)
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(
            dns.message.make_query("example.test", "MX"),
            server.host,
            port=server.port,
            timeout=0.2,
        )
    assert ask(server, "mx1.example.test", "A").answer != []  # the held query blocks no one
    server.heal("example.test")
    assert ask(server, "example.test", "MX").answer != []


def test_large_answer_truncates_over_udp_and_resolver_retries_tcp(
    server: AuthoritativeDns,
) -> None:
    for i in range(40):
        server.add("big.example.test", "TXT", f'"{i:02d}-{"x" * 200}"')
    over_udp = ask(server, "big.example.test", "TXT")
    assert over_udp.flags & dns.flags.TC and over_udp.answer == []
    assert len(ask(server, "big.example.test", "TXT", tcp=True).answer[0]) == 40
    assert len(resolver(server).resolve("big.example.test", "TXT")) == 40


def test_queries_are_logged(server: AuthoritativeDns) -> None:
    ask(server, "Example.Test.", "MX")
    ask(server, "nothing.test", "TLSA")
    assert server.queries[-2:] == [("example.test", "MX"), ("nothing.test", "TLSA")]


def test_fixed_port_and_clean_restart() -> None:
    with AuthoritativeDns() as first:
        port = first.port
    with AuthoritativeDns(port=port) as again:
        again.add("x.test", "A", "127.0.0.1")
        assert ask(again, "x.test", "A", tcp=True).answer != []


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        AuthoritativeDns(host="0.0.0.0")
