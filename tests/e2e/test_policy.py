"""Operator TLS strategies per recipient domain or account (`secumail policy`)."""

from __future__ import annotations

import ssl

from tests.e2e.world import Customer, GatewayProcess, World


def test_dane_required_for_a_domain_without_dane_refuses_it(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("partner.test")
    gateway.cli("policy", "set", "--domain", "partner.test", "--dane", "require")
    qid = gateway.send(customer, ["x@partner.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "DANE is required" in shown["recipients"][0]["reply"]
    assert mx.connections == 0


def test_mta_sts_required_without_a_policy_refuses(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    world.domain("nosts.test")
    gateway.cli("policy", "set", "--domain", "nosts.test", "--mta-sts", "require")
    qid = gateway.send(customer, ["x@nosts.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "MTA-STS is required" in shown["recipients"][0]["reply"]


def test_minimum_tls_13_refuses_a_tls_12_server(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    old = world.domain("tls12.test", tls_max=ssl.TLSVersion.TLSv1_2)
    gateway.cli("policy", "set", "--domain", "tls12.test", "--min-tls", "TLSv1.3")
    qid = gateway.send(customer, ["x@tls12.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "TLS handshake failed" in shown["recipients"][0]["reply"]
    assert old.received == []
    gateway.cli("policy", "delete", "--domain", "tls12.test")
    assert gateway.cli("policy", "list") == []


def test_relaxed_starttls_needs_the_account_to_allow_it(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("legacy.test", "no_starttls")
    gateway.cli("policy", "set", "--account", "Ziekenhuis", "--starttls", "optional")
    strict = gateway.send(customer, ["x@legacy.test"])
    gateway.wait_status(strict, {"refused_insecure"})
    gateway.cli("account", "update", "Ziekenhuis", "--relaxed-tls", "on")
    gateway.stop()
    gateway.start()
    relaxed = gateway.send(customer, ["y@legacy.test"])
    shown = gateway.wait_status(relaxed, {"delivered"})
    assert shown["attempts"][-1]["route_method"] == "relaxed"
    assert mx.wait_for(1)[0].tls_version is None
    listed = gateway.cli("policy", "list")
    assert [(p["scope"], p["starttls"]) for p in listed] == [("account", "optional")]
