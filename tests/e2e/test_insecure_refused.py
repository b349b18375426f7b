"""No secure route → not delivered, and the sender is told why (issue 2, RFC 3464 DSN)."""

from __future__ import annotations

import email
import email.policy

import pytest

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx

# kind of MX → what the per-MX reason in the notice must say
INSECURE_KINDS = {
    "no_starttls": "does not offer STARTTLS",
    "expired": "certificate has expired",
    "wrong_name": "Hostname mismatch",
    "self_signed": "self-signed certificate",
    "tls10": "TLS handshake failed",
}


def _parts(raw: bytes) -> dict[str, email.message.Message]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    return {p.get_content_type(): p for p in msg.get_payload()}


def test_every_insecure_mx_kind_is_refused_and_the_sender_gets_one_notice(
    gateway: GatewayProcess, customer: Customer, world: World, sender_mx: HarnessMx
) -> None:
    servers = {kind: world.domain(f"{kind.replace('_', '-')}.test", kind) for kind in INSECURE_KINDS}
    recipients = [f"patient@{kind.replace('_', '-')}.test" for kind in INSECURE_KINDS]
    qid = gateway.send(customer, recipients, subject="Medisch dossier")
    shown = gateway.wait_status(qid, {"refused_insecure"})
    for server in servers.values():
        assert server.received == [], "nothing may be delivered over an insecure route"
    by_address = {r["address"]: r for r in shown["recipients"]}
    for kind, reason in INSECURE_KINDS.items():
        rcpt = by_address[f"patient@{kind.replace('_', '-')}.test"]
        assert rcpt["enhanced"] == "5.7.10"
        assert reason in rcpt["reply"], (kind, rcpt["reply"])
    attempts = [a for a in shown["attempts"] if a["outcome"] == "insecure"]
    assert len(attempts) == len(INSECURE_KINDS)

    notice = sender_mx.wait_for(1)[0]
    assert notice.mail_from == "", "a notice has the null sender (RFC 3464 §2)"
    assert notice.rcpt_to == ["alice@hospital.test"]
    assert notice.tls_version in ("TLSv1.2", "TLSv1.3"), "the notice travels securely too"
    parts = _parts(notice.data)
    human = parts["text/plain"].get_payload(decode=True).decode()
    assert "NOT SENT" in human and "another channel" in human
    for kind, reason in INSECURE_KINDS.items():
        assert f"patient@{kind.replace('_', '-')}.test" in human
        assert reason in human
    status = parts["message/delivery-status"].as_string()
    assert status.count("Action: failed") == len(INSECURE_KINDS)
    assert "Status: 5.7.10" in status
    # The notice names the message but carries none of its content.
    assert b"this is private" not in notice.data
    assert qid.encode() in notice.data
    # And it is recorded on the original message.
    events = [e["kind"] for e in gateway.message(qid)["events"]]
    assert "notice_failed" in events


def test_notice_is_in_the_accounts_language(
    gateway: GatewayProcess, dns: AuthoritativeDns, world: World
) -> None:
    sender_mx = world.domain("gemeente.test")
    dutch = gateway.onboard(dns, "Gemeente", "gemeente.test", locale="nl")
    world.domain("plain.test", "no_starttls")
    qid = gateway.send(dutch, ["burger@plain.test"], sender="zorg@gemeente.test")
    gateway.wait_status(qid, {"refused_insecure"})
    notice = sender_mx.wait_for(1)[0]
    parts = _parts(notice.data)
    human = parts["text/plain"].get_payload(decode=True).decode()
    assert "NIET VERZONDEN" in human
    assert "ander kanaal" in human
    msg = email.message_from_bytes(notice.data)
    assert str(email.header.make_header(email.header.decode_header(msg["Subject"]))).startswith(
        "Niet afgeleverd"
    )


def test_secure_backup_mx_is_used_when_the_primary_is_insecure(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    world.domain("mixed.test", "no_starttls", preference=10)
    good = world.domain("mixed.test", "good", preference=20)
    qid = gateway.send(customer, ["x@mixed.test"])
    good.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    outcomes = [(a["mx"], a["outcome"]) for a in shown["attempts"]]
    assert outcomes == [("mx10.mixed.test", "insecure"), ("mx20.mixed.test", "transaction")]


@pytest.mark.parametrize("kind", ["no_starttls"])
def test_insecure_refusal_is_immediate_not_retried(
    kind: str, gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("once.test", kind)
    qid = gateway.send(customer, ["x@once.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert shown["recipients"][0]["attempts"] == 1
    assert mx.connections == 1
