"""End-to-end delivery through the real gateway process (issue 2: secure delivery)."""

from __future__ import annotations

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.mx import HarnessMx


def test_message_to_good_mx_is_delivered_over_verified_tls(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    qid = gateway.send(customer, ["dr.jansen@clinic.test"], subject="Uitslag")
    got = mx.wait_for(1)[0]
    assert got.rcpt_to == ["dr.jansen@clinic.test"]
    assert got.mail_from == "alice@hospital.test"
    assert got.tls_version in ("TLSv1.2", "TLSv1.3")
    assert b"this is private." in got.data
    shown = gateway.wait_status(qid, {"delivered"})
    rcpt = shown["recipients"][0]
    assert rcpt["status"] == "delivered"
    assert rcpt["reply"].startswith("250")
    attempt = shown["attempts"][-1]
    assert attempt["mx"] == "mx10.clinic.test"
    assert attempt["route_method"] == "verified"
    assert attempt["tls_version"] == got.tls_version
    assert len(attempt["cert_fingerprint"]) == 64
    assert shown["finished_at"] is not None


def test_connections_to_the_same_mx_are_reused_and_recipients_share_one_transaction(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    first = gateway.send(customer, ["a@clinic.test", "b@clinic.test"])
    mx.wait_for(1)
    gateway.wait_status(first, {"delivered"})
    second = gateway.send(customer, ["c@clinic.test"])
    got = mx.wait_for(2)
    gateway.wait_status(second, {"delivered"})
    assert sorted(got[0].rcpt_to) == ["a@clinic.test", "b@clinic.test"]
    assert mx.connections == 1


def test_sender_mx_fixture_is_separate(sender_mx: HarnessMx) -> None:
    assert sender_mx.received == []
