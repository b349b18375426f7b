"""REQUIRETLS (RFC 8689) and the explicit, logged way below verified TLS."""

from __future__ import annotations

from tests.e2e.raw_smtp import open_session
from tests.e2e.world import Customer, GatewayProcess, World, make_message


def _submit_requiretls(gateway: GatewayProcess, customer: Customer, rcpt: str) -> str:
    s = open_session(gateway, customer)
    code, text = s.cmd("EHLO client.test")
    assert "REQUIRETLS" in text.split("\n"), "offered inside TLS (RFC 8689 §3)"
    assert s.cmd("MAIL FROM:<alice@hospital.test> REQUIRETLS")[0] == 250
    assert s.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(make_message("alice@hospital.test", [rcpt], "requiretls") + b".\r\n")
    code, text = s.reply()
    assert code == 250, text
    return text.rsplit(" ", 1)[1]


def test_requiretls_message_goes_only_to_an_mx_that_supports_it(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    # RFC 8689 §5: the MX must be authenticated (DNSSEC or MTA-STS); both have MTA-STS.
    plain = world.domain("old.test")
    modern = world.domain("new.test", extensions=("REQUIRETLS",))
    world.mta_sts("old.test")
    world.mta_sts("new.test")
    refused = _submit_requiretls(gateway, customer, "x@old.test")
    delivered = _submit_requiretls(gateway, customer, "y@new.test")
    got = modern.wait_for(1)[0]
    assert "REQUIRETLS" in got.mail_params, "the option is passed on (RFC 8689 §4)"
    gateway.wait_status(delivered, {"delivered"})
    shown = gateway.wait_status(refused, {"refused_insecure"})
    assert shown["recipients"][0]["enhanced"] == "5.7.30"
    assert "does not support REQUIRETLS" in shown["recipients"][0]["reply"]
    assert plain.received == []


def test_requiretls_refuses_an_mx_that_is_not_authenticated(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    # No DNSSEC, no MTA-STS: the MX name itself could have been forged (RFC 8689 §5).
    mx = world.domain("unsigned.test", extensions=("REQUIRETLS",))
    qid = _submit_requiretls(gateway, customer, "x@unsigned.test")
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "REQUIRETLS needs an MX from DNSSEC-signed DNS or an MTA-STS policy" in shown["recipients"][0]["reply"]
    assert mx.received == []


def test_tls_required_no_is_ignored_unless_the_account_allows_relaxing(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("plain.test", "no_starttls")
    body = b"TLS-Required: No\r\n" + make_message("alice@hospital.test", ["x@plain.test"], "relaxed?")
    strict = gateway.send(customer, ["x@plain.test"], body=body)
    gateway.wait_status(strict, {"refused_insecure"})
    assert mx.received == []
    gateway.cli("account", "update", "Ziekenhuis", "--relaxed-tls", "on")
    gateway.stop()
    gateway.start()
    relaxed = gateway.send(customer, ["x@plain.test"], body=body)
    got = mx.wait_for(1)[0]
    assert got.tls_version is None
    shown = gateway.wait_status(relaxed, {"delivered"})
    assert shown["attempts"][-1]["route_method"] == "relaxed", "marked in the metadata"
    assert "RELAXED delivery" in gateway.log(), "and logged"
    # Without the header the same account still gets the strict route.
    strict_again = gateway.send(customer, ["z@plain.test"])
    gateway.wait_status(strict_again, {"refused_insecure"})
