"""DANE for SMTP (RFC 7672) end to end: DNSSEC-signed zones behind a real validating
resolver (unbound), whose AD bit the gateway trusts because it is on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dnssec import SignedZoneDns
from tests.harness.unbound import ValidatingResolver

ZONE = "dnssec.test"


@pytest.fixture
def dns(signed_dns: SignedZoneDns) -> SignedZoneDns:
    """In this module every record lives in the signing server (unsigned outside ZONE)."""
    return signed_dns


@pytest.fixture
def gateway(
    make_gateway: Callable[..., GatewayProcess], validating_resolver: ValidatingResolver
) -> GatewayProcess:
    return make_gateway(dns__nameservers=[validating_resolver.address]).start()


def _tlsa(dns: SignedZoneDns, mx_host: str, port: int, record: str) -> None:
    dns.add(f"_{port}._tcp.{mx_host}", "TLSA", record)


def test_dane_ee_authenticates_a_self_signed_certificate(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    cert = world.ca.self_signed(f"mx10.clinic.{ZONE}")
    mx = world.domain(f"clinic.{ZONE}", cert=cert)
    _tlsa(dns, f"mx10.clinic.{ZONE}", mx_port, f"3 1 1 {cert.spki_sha256}")
    qid = gateway.send(customer, [f"x@clinic.{ZONE}"])
    mx.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    attempt = shown["attempts"][-1]
    assert attempt["route_method"] == "dane"
    assert attempt["policy"] == f"TLSA 3 1 1 {cert.spki_sha256}"
    evidence = gateway.cli("evidence", "export", qid)["evidence"][0]["record"]
    assert evidence["route"] == "dane" and evidence["route_policy"].startswith("TLSA 3 1 1")


def test_dane_ta_authenticates_the_chain_and_the_name(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    # RFC 7671 §5.2.2: with "2 0 1" the server must present the trust anchor in its chain.
    leaf = world.ca.issue(f"mx10.ta.{ZONE}")
    mx = world.domain(f"ta.{ZONE}", cert=dataclasses.replace(leaf, cert_file=leaf.chain_file))
    _tlsa(dns, f"mx10.ta.{ZONE}", mx_port, f"2 0 1 {world.ca.ca_fingerprint_sha256}")
    qid = gateway.send(customer, [f"x@ta.{ZONE}"])
    mx.wait_for(1)
    assert gateway.wait_status(qid, {"delivered"})["attempts"][-1]["route_method"] == "dane"


def test_tlsa_that_does_not_match_is_refused_even_with_a_publicly_valid_certificate(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    mx = world.domain(f"mismatch.{ZONE}")  # a CA-valid certificate: PKIX would accept it
    other = world.ca.issue("unrelated.test")
    _tlsa(dns, f"mx10.mismatch.{ZONE}", mx_port, f"3 1 1 {other.spki_sha256}")
    qid = gateway.send(customer, [f"x@mismatch.{ZONE}"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "DANE" in shown["recipients"][0]["reply"]
    assert mx.received == [], "usable TLSA records make DANE mandatory: no PKIX fallback"


def test_pkix_usages_are_unusable_for_smtp_and_verified_tls_applies(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    mx = world.domain(f"pkix.{ZONE}")
    _tlsa(dns, f"mx10.pkix.{ZONE}", mx_port, f"1 1 1 {'00' * 32}")  # RFC 7672 §3.1.3
    qid = gateway.send(customer, [f"x@pkix.{ZONE}"])
    mx.wait_for(1)
    assert gateway.wait_status(qid, {"delivered"})["attempts"][-1]["route_method"] == "verified"


def test_bogus_tlsa_is_a_temporary_failure_not_no_dane(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    mx = world.domain(f"bogus.{ZONE}")
    name = f"_{mx_port}._tcp.mx10.bogus.{ZONE}"
    dns.add(name, "TLSA", f"3 1 1 {'11' * 32}")
    dns.bogus(name)
    qid = gateway.send(customer, [f"x@bogus.{ZONE}"])
    shown = gateway.wait_status(qid, {"deferred"})
    assert "TLSA lookup failed" in shown["recipients"][0]["reply"]
    assert mx.connections == 0


def test_tlsa_in_an_insecure_zone_is_ignored(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    dns.add_zone(f"plain.{ZONE}", signed=False)
    mx = world.domain(f"plain.{ZONE}")
    _tlsa(dns, f"mx10.plain.{ZONE}", mx_port, f"3 1 1 {'22' * 32}")  # would not match
    qid = gateway.send(customer, [f"x@plain.{ZONE}"])
    mx.wait_for(1)
    assert gateway.wait_status(qid, {"delivered"})["attempts"][-1]["route_method"] == "verified"


def test_losing_dane_is_a_downgrade_until_the_operator_clears_it(
    gateway: GatewayProcess, customer: Customer, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    leaf = world.ca.issue(f"mx10.memory.{ZONE}")
    mx = world.domain(f"memory.{ZONE}", cert=dataclasses.replace(leaf, cert_file=leaf.chain_file))
    name = f"_{mx_port}._tcp.mx10.memory.{ZONE}"
    dns.add(name, "TLSA", f"3 1 1 {leaf.spki_sha256}")
    first = gateway.send(customer, [f"a@memory.{ZONE}"])
    gateway.wait_status(first, {"delivered"})
    assert gateway.cli("route", "memory")[0]["method"] == "dane"
    dns.remove(name, "TLSA")
    gateway.stop()
    gateway.start()  # forget cached DNS answers
    second = gateway.send(customer, [f"b@memory.{ZONE}"])
    shown = gateway.wait_status(second, {"deferred"})
    assert "downgrade" in shown["recipients"][0]["reply"]
    assert len(mx.received) == 1
    gateway.cli("route", "forget", f"memory.{ZONE}")
    gateway.stop()
    gateway.start()
    gateway.wait_status(second, {"delivered"}, timeout=30)
    assert gateway.message(second)["attempts"][-1]["route_method"] == "verified"


def test_check_shows_dane_and_the_matching_record(
    gateway: GatewayProcess, world: World, dns: SignedZoneDns, mx_port: int
) -> None:
    cert = world.ca.self_signed(f"mx10.chk.{ZONE}")
    world.domain(f"chk.{ZONE}", cert=cert)
    _tlsa(dns, f"mx10.chk.{ZONE}", mx_port, f"3 1 1 {cert.spki_sha256}")
    world.domain(f"chkbad.{ZONE}")
    _tlsa(dns, f"mx10.chkbad.{ZONE}", mx_port, f"3 1 1 {'33' * 32}")
    good, bad = gateway.cli("check", f"chk.{ZONE}", f"chkbad.{ZONE}", check=False)
    assert (good["secure"], good["method"]) == (True, "dane")
    assert good["dnssec"]["mx"] is True
    probe = good["mx"][0]
    assert probe["matched"] == f"TLSA 3 1 1 {cert.spki_sha256}"
    assert probe["dnssec"] == {"address": True, "tlsa": True, "tlsa_records": 1}
    assert probe["certificate"]["name_match"] is True
    assert bad["secure"] is False
    assert bad["mx"][0]["result_type"] == "tlsa-invalid"
