"""Issue 14: late bounces through the inbound MX of the real `secumail serve`.

A message is delivered (the harness MX answers 250); later a bounce arrives, as an MTA
sends it, at the return path the harness MX saw (`bounce+…@gw.secumail.test`), over the
inbound listener (`inbound.listen`). Then the recipient is `bounced`, the address is
suppressed, the sender gets a notice and a webhook, and the evidence of the earlier
delivery still verifies. Forged and unknown bounce addresses change nothing (counted);
the inbound MX relays nothing and offers no AUTH.
"""

from __future__ import annotations

import json
import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, problem
from tests.e2e.test_api_webhooks import SECRET, _verify, _wait_posts
from tests.e2e.world import GATEWAY_HOST, Customer, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx

DIAGNOSTIC = "550 5.1.1 <dr@clinic.test>: Recipient address rejected: mailbox gone"


def dsn(return_path: str, recipient: str, *, action: str = "failed", status: str = "5.1.1",
        diagnostic: str = DIAGNOSTIC) -> bytes:
    """A delivery status notification (RFC 3464 inside RFC 6522's multipart/report) as
    the recipient's MTA writes it, after it had accepted the message."""
    text = f"""From: MAILER-DAEMON@mx10.clinic.test
To: {return_path}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx10.clinic.test.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx10.clinic.test
Arrival-Date: Mon, 7 Dec 2026 21:00:00 +0000

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mailstore.clinic.test
Diagnostic-Code: smtp; {diagnostic}

--B0UND
Content-Type: text/rfc822-headers

From: alice@hospital.test
Subject: Uitslag

--B0UND--
"""
    return text.replace("\n", "\r\n").encode()


def bounce_to(port: int, rcpts: list[str], message: bytes) -> tuple[int, bytes]:
    """Send a bounce as an MTA does (null reverse-path, RFC 5321 §4.5.5); the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx10.clinic.test", timeout=20) as s:
        s.ehlo()
        assert s.mail("")[0] == 250
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        return s.data(message)


@pytest.fixture
def inbound_port() -> int:
    return free_port()


@pytest.fixture
def gw(make_gateway, inbound_port: int, sts_port: int) -> GatewayProcess:
    gateway = make_gateway(
        inbound__listen=[f"127.0.0.1:{inbound_port}"], api__webhooks_port=sts_port
    ).start()
    gateway._wait_listening(inbound_port)
    return gateway


@pytest.fixture
def hospital(gw: GatewayProcess, dns: AuthoritativeDns, sender_mx: HarnessMx) -> Customer:
    return gw.onboard(dns, "Ziekenhuis", "hospital.test")


def _webhook(gw: GatewayProcess, world: World, dns: AuthoritativeDns, sts_server) -> object:
    receiver = sts_server()
    dns.add("hooks.hospital.test", "A", World.STS_IP)
    receiver.add_certificate("hooks.hospital.test", world.ca.issue("hooks.hospital.test"))
    receiver.set_route("/hooks", 200, {"Content-Type": "text/plain"}, "ok", host="hooks.hospital.test")
    created = Api(gw).login("Ziekenhuis").post(
        "/v1/webhooks",
        json={"url": "https://hooks.hospital.test/hooks", "events": ["bounced"], "secret": SECRET},
    )
    assert created.status_code == 201, created.text
    return receiver


def test_with_the_inbound_mx_each_recipient_has_its_own_return_path(
    gw: GatewayProcess, hospital: Customer, world: World
) -> None:
    """With `inbound.listen` set, each recipient's copy goes in its own transaction with
    its own bounce address (so a later bounce names it), one after another over the one
    connection; the message's sender stays who it was. (Without an inbound MX the return
    path stays the sender's own address: tests/e2e/test_delivery.py.)"""
    mx = world.domain("clinic.test")
    qid = gw.send(hospital, ["a@clinic.test", "b@clinic.test"])
    got = mx.wait_for(2)
    gw.wait_status(qid, {"delivered"})
    assert sorted(tuple(g.rcpt_to) for g in got) == [("a@clinic.test",), ("b@clinic.test",)]
    for g in got:
        assert re.fullmatch(rf"bounce\+{qid}[a-z2-7]{{20}}@{re.escape(GATEWAY_HOST)}", g.mail_from)
    assert got[0].mail_from != got[1].mail_from
    assert mx.connections == 1
    assert gw.message(qid)["mail_from"] == "alice@hospital.test"


def test_a_late_dsn_bounces_suppresses_notifies_and_leaves_the_evidence_valid(
    gw: GatewayProcess, hospital: Customer, world: World, dns: AuthoritativeDns,
    sender_mx: HarnessMx, sts_server, inbound_port: int, tmp_path: Path,
) -> None:
    receiver = _webhook(gw, world, dns, sts_server)
    mx = world.domain("clinic.test")
    qid = gw.send(hospital, ["dr@clinic.test"], subject="Uitslag")
    got = mx.wait_for(1)[0]
    gw.wait_status(qid, {"delivered"})
    assert re.fullmatch(rf"bounce\+{qid}[a-z2-7]{{20}}@{re.escape(GATEWAY_HOST)}", got.mail_from)

    code, text = bounce_to(inbound_port, [got.mail_from], dsn(got.mail_from, "dr@clinic.test"))
    assert code == 250, text

    shown = gw.wait_status(qid, {"bounced"})
    rcpt = shown["recipients"][0]
    assert rcpt["reply"] == DIAGNOSTIC and rcpt["enhanced"] == "5.1.1"
    kinds = [e["kind"] for e in shown["events"] if e["recipient"] == "dr@clinic.test"]
    assert kinds.index("delivered") < kinds.index("bounced"), "the bounce is an event after the delivery"
    # the sender is told: a notice (null sender) with the remote diagnostic
    notice = sender_mx.wait_for(1)[0]
    assert notice.rcpt_to == ["alice@hospital.test"] and notice.mail_from == ""
    assert b"Status: 5.1.1" in notice.data and b"mailbox gone" in notice.data
    assert b"Subject: Not delivered after all: " in notice.data
    assert b"accepted your message" in notice.data and b"later" in notice.data
    # and its webhook
    post = _wait_posts(receiver, 1)[0]
    assert _verify(SECRET, post.headers["secumail-signature"], post.body)
    event = json.loads(post.body)
    assert event["type"] == "bounced" and event["data"]["message_id"] == qid
    assert event["data"]["recipient"] == "dr@clinic.test"
    assert event["data"]["late"] is True and event["data"]["reply"] == DIAGNOSTIC
    # the address is suppressed: the next message to it is refused
    refused = problem(
        Api(gw).login("Ziekenhuis").post(
            "/v1/messages", json={"from": "alice@hospital.test", "to": ["dr@clinic.test"], "text": "t"}
        ),
        422,
    )
    assert "suppressed" in refused["detail"]
    # the signed evidence of the delivery before still verifies
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(gw.cli("evidence", "export", qid)))
    verified = gw.cli_process("evidence", "verify", str(path))
    assert verified.returncode == 0 and "✓ dr@clinic.test: signature valid" in verified.stdout, verified
    # a second copy of the same bounce changes nothing more: one notice
    assert bounce_to(inbound_port, [got.mail_from], dsn(got.mail_from, "dr@clinic.test"))[0] == 250
    time.sleep(1.5)
    assert len(sender_mx.received) == 1


def test_a_delay_report_is_an_event_only(
    gw: GatewayProcess, hospital: Customer, world: World, sender_mx: HarnessMx, inbound_port: int
) -> None:
    mx = world.domain("clinic.test")
    qid = gw.send(hospital, ["dr@clinic.test"])
    rp = mx.wait_for(1)[0].mail_from
    gw.wait_status(qid, {"delivered"})
    message = dsn(rp, "dr@clinic.test", action="delayed", status="4.2.2",
                  diagnostic="452 4.2.2 mailbox full")
    assert bounce_to(inbound_port, [rp], message)[0] == 250
    deadline = time.monotonic() + 10
    while not [e for e in gw.message(qid)["events"] if e["kind"] == "bounce_delayed"]:
        assert time.monotonic() < deadline, "no bounce_delayed event"
        time.sleep(0.2)
    assert gw.message(qid)["recipients"][0]["status"] == "delivered"
    assert sender_mx.received == []


def test_forged_and_unknown_bounce_addresses_change_nothing_and_are_counted(
    gw: GatewayProcess, hospital: Customer, world: World, sender_mx: HarnessMx, inbound_port: int
) -> None:
    mx = world.domain("clinic.test")
    qid = gw.send(hospital, ["dr@clinic.test"])
    rp = mx.wait_for(1)[0].mail_from
    gw.wait_status(qid, {"delivered"})
    local, _, domain = rp.partition("@")
    tag = local[-20:]
    forged = local[:-20] + ("b" if tag[0] == "a" else "a") + tag[1:] + "@" + domain
    other_id = "0" * 16  # shaped like a message id, no such message
    unknown = f"bounce+{other_id}{tag}@{domain}"
    for address in (forged, unknown):
        code, _ = bounce_to(inbound_port, [address], dsn(address, "dr@clinic.test"))
        assert code == 250, "the same answer as for a valid address: no oracle"
    time.sleep(1.0)
    shown = gw.message(qid)
    assert shown["recipients"][0]["status"] == "delivered"
    assert not [e for e in shown["events"] if e["kind"] == "bounced"]
    assert sender_mx.received == []
    assert Api(gw).login("Ziekenhuis").get("/v1/suppressions").json()["items"] == []
    dropped = gw.cli("queue")["bounces_dropped"]
    assert dropped == {"forged_address": 1, "unknown_message": 1}
    assert re.search(r'msg="bounce dropped" reason=forged_address', gw.log())
    metrics = Api(gw).client.get("/metrics").text
    assert 'secumail_bounces_dropped_total{reason="forged_address"} 1' in metrics


def test_inbound_relays_nothing_offers_starttls_and_refuses_auth(
    gw: GatewayProcess, inbound_port: int
) -> None:
    never = [
        "x@clinic.test",  # another domain
        "@mx.clinic.test,@relay.test:x@clinic.test",  # a source route elsewhere
        f"x%clinic.test@{GATEWAY_HOST}",  # the percent hack
        f"x@clinic.test@{GATEWAY_HOST}",
        f'"bounce+x@clinic.test"@{GATEWAY_HOST}',  # a quoted local part
        "bounce+x@[127.0.0.1]",  # an address literal
        "postmaster",  # RFC 5321 §4.5.1: refused here, documented (no mailbox to keep)
        f"postmaster@{GATEWAY_HOST}",
        f"bounce+tooshort@{GATEWAY_HOST}",
    ]
    for start in range(0, len(never), 4):  # a few per session: each refusal is an error
        with smtplib.SMTP("127.0.0.1", inbound_port, local_hostname="mx.clinic.test", timeout=20) as s:
            s.ehlo()
            assert s.has_extn("starttls") and not s.has_extn("auth")
            assert s.mail("")[0] == 250
            for address in never[start:start + 4]:
                code, text = s.docmd("RCPT", f"TO:<{address}>")
                assert (code, text[:5]) == (550, b"5.1.1"), (address, code, text)
    with smtplib.SMTP("127.0.0.1", inbound_port, local_hostname="mx.clinic.test", timeout=20) as s:
        s.ehlo()
        s.starttls(context=gw.client_context())
        s.ehlo()
        assert not s.has_extn("auth")
        code, text = s.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert (code, text[:5]) == (502, b"5.5.1")
