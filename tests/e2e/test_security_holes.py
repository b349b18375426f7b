"""Regression tests for the five holes found from outside (issue 11), each as the attacker
tried it, against the real `secumail serve`: header injection through RFC 2047 encoded
words, evidence files whose readable text was changed, another tenant's domain in
Sender:, NUL smuggling in DATA, and mail loops."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from secumail.mail.headers import parse_header_section
from tests.e2e.api_client import Api, problem
from tests.e2e.raw_smtp import open_session
from tests.e2e.world import Customer, GatewayProcess, World, make_message

INJECTED = "=?utf-8?q?hi=0D=0ABcc:_spy@evil.test?="
VARIANTS = [
    INJECTED,
    "=?UTF-8?Q?hi=0ABcc:_spy@evil.test?=",  # LF alone, upper case
    "=?utf-8?b?" + base64.b64encode(b"hi\r\nBcc: spy@evil.test").decode() + "?=",  # B form
    "Re: =?iso-8859-1?q?x=0Dy?= report",  # CR alone, inside other text
    "=?utf-8?q?nul=00here?=",  # NUL
    "=?utf-8?b?" + base64.b64encode("hi\u2028Bcc: x@evil.test".encode()).decode() + "?=",
    # encoded twice: a reader that decodes twice finds the CR LF
    "=?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3D0D=3D0ABcc:=5Fx@evil.test=3F=3D?=",
]


def _delivered_fields(data: bytes) -> list[str]:
    return [name.lower() for name, _ in parse_header_section(data).fields]


def _send_raw(gateway: GatewayProcess, who: Customer, mail_from: str, rcpts: list[str], data: bytes):
    """MAIL, RCPT…, DATA with `data` sent as given (dot-stuffing is the caller's); the
    reply to the end of data."""
    s = open_session(gateway, who)
    assert s.cmd(f"MAIL FROM:<{mail_from}>")[0] == 250
    for r in rcpts:
        assert s.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(data)
    reply = s.reply()
    s.close()
    return reply


# --- 1. header injection through an encoded word ---------------------------------------


def test_api_subject_with_an_encoded_line_break_is_refused(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    api = Api(gateway).login("Ziekenhuis")
    for subject in VARIANTS:
        body = {"from": "alice@hospital.test", "to": ["dr@clinic.test"], "subject": subject,
                "text": "x"}
        refused = problem(api.post("/v1/messages", json=body), 422)
        assert refused["field"] == "subject" and "header" in refused["detail"], subject


def test_every_api_header_value_is_checked_after_decoding_and_nothing_leaks(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    api = Api(gateway).login("Ziekenhuis")
    base = {"from": "alice@hospital.test", "to": ["dr@clinic.test"], "subject": "Lab", "text": "x"}
    attachment = {"content_type": "text/plain", "content": base64.b64encode(b"x").decode()}
    cases = {
        "from": {**base, "from": f'"{INJECTED}" <alice@hospital.test>'},
        "reply_to": {**base, "reply_to": f"{INJECTED} <desk@hospital.test>"},
        "headers.X-Case": {**base, "headers": {"X-Case": INJECTED}},
        "attachments[0].filename": {**base, "attachments": [{**attachment, "filename": INJECTED}]},
        "text": {**base, "text": "a NUL \x00 in the body"},
    }
    for field, body in cases.items():
        refused = problem(api.post("/v1/messages", json=body), 422)
        assert refused["field"] == field, (field, refused)
    # Raw MIME through the API: the same rule, judged by the acceptance.
    raw = make_message("alice@hospital.test", ["dr@clinic.test"], INJECTED)
    r = api.post("/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"})
    assert "Subject" in problem(r, 422)["detail"]
    # A harmless encoded word still goes through, decoded by nobody on the way.
    ok = api.post("/v1/messages", json={**base, "subject": "Caf\u00e9 =?utf-8?q?ok?="})
    assert ok.status_code == 202, ok.text
    gateway.wait_status(ok.json()["id"], {"delivered"})
    delivered = mx.wait_for(1)
    assert len(delivered) == 1
    assert "bcc" not in _delivered_fields(delivered[0].data)


def test_smtp_subject_with_an_encoded_line_break_is_refused(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    for subject in VARIANTS[:3]:
        data = make_message("alice@hospital.test", ["dr@clinic.test"], subject)
        code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                               data + b".\r\n")
        assert (code, text[:5]) == (554, "5.6.0") and "Subject" in text, text
    # Proof that nothing was queued: the next, clean message is the first to arrive.
    gateway.send(customer, ["dr@clinic.test"], subject="clean")
    assert [m.data.count(b"Subject: clean") for m in mx.wait_for(1)] == [1]


# --- 2. evidence verify vouches only for what is signed ---------------------------------


def test_evidence_verify_refuses_a_file_whose_readable_fields_were_changed(
    gateway: GatewayProcess, customer: Customer, world: World, tmp_path: Path
) -> None:
    world.domain("clinic.test")
    qid = gateway.send(customer, ["alice@clinic.test"])
    gateway.wait_status(qid, {"delivered"})
    exported = gateway.cli("evidence", "export", qid)
    path = tmp_path / "evidence.json"

    def verify(doc: dict) -> tuple[int, str]:
        path.write_text(json.dumps(doc))
        done = gateway.cli_process("evidence", "verify", str(path))
        return done.returncode, done.stdout + done.stderr

    code, out = verify(exported)
    assert code == 0 and "✓ alice@clinic.test: signature valid" in out, out
    relabelled = json.loads(json.dumps(exported))
    relabelled["evidence"][0]["recipient"] = "mallory@clinic.test"
    relabelled["evidence"][0]["record"]["recipient"] = "mallory@clinic.test"
    code, out = verify(relabelled)
    assert code == 1 and "✓" not in out and "readable recipient" in out, out
    copy_only = json.loads(json.dumps(exported))
    copy_only["evidence"][0]["record"]["mx_host"] = "mx.elsewhere.test"
    code, out = verify(copy_only)
    assert code == 1 and "mx_host" in out, out
    smuggled = json.loads(json.dumps(exported))
    smuggled["evidence"][0]["note"] = "delivered to mallory as well"
    code, out = verify(smuggled)
    assert code == 1 and "unsigned members" in out, out
    # The API shows the signed recipient, whatever the path said.
    api = Api(gateway).login("Ziekenhuis")
    shown = api.get(f"/v1/messages/{qid}/evidence/alice@clinic.test").json()
    assert shown["recipient"] == shown["record"]["recipient"] == "alice@clinic.test"


# --- 3. every originator field in a verified domain -------------------------------------


SPOOFED_ORIGINATORS = [
    "Sender: <bob@school.test>",
    "Sender: Bob <bob@unverified.test>",
    "Resent-From: <bob@school.test>",
    "Resent-From: <alice@hospital.test>, <bob@school.test>",
    "Resent-Sender: <bob@school.test>",
    'Sender: "bob@school.test" <alice@hospital.test>',
    "Sender: (bob@school.test) alice@hospital.test",
]


def test_another_tenants_domain_in_an_originator_field_is_refused(
    gateway: GatewayProcess, customer: Customer, world: World, dns
) -> None:
    world.domain("school.test")
    gateway.onboard(dns, "School", "school.test")
    api = Api(gateway).login("Ziekenhuis")
    for field in SPOOFED_ORIGINATORS:
        data = field.encode() + b"\r\n" + make_message("alice@hospital.test", ["dr@clinic.test"], "x")
        code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                               data + b".\r\n")
        name = field.split(":")[0]
        assert (code, text[:5]) == (550, "5.7.1"), (field, text)
        assert name in text and "not a domain of your account" in text, (field, text)
        r = api.post("/v1/messages", content=data, headers={"Content-Type": "message/rfc822"})
        assert problem(r, 403)["field"] == name.lower(), field


def test_own_sender_and_any_reply_to_are_accepted(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    data = (
        b"Sender: Desk <desk@hospital.test>\r\nReply-To: <someone@school.test>\r\n"
        + make_message("alice@hospital.test", ["dr@clinic.test"], "x")
    )
    qid = gateway.send(customer, ["dr@clinic.test"], body=data)
    gateway.wait_status(qid, {"delivered"})
    assert b"Reply-To: <someone@school.test>" in mx.wait_for(1)[0].data


# --- 4. NUL in DATA: refused, never relayed --------------------------------------------


def test_nul_smuggling_in_data_is_refused_and_nothing_reaches_the_mx(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    head = make_message("alice@hospital.test", ["dr@clinic.test"], "x")
    smuggled = (
        b"\x00.\r\nMAIL FROM:<alice@hospital.test>\r\nRCPT TO:<victim@clinic.test>\r\nDATA\r\n"
        + make_message("alice@hospital.test", ["victim@clinic.test"], "smuggled")
        + b".\r\n"
    )
    code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                           head + smuggled)
    assert (code, text[:5]) == (554, "5.6.0") and "NUL" in text, text
    code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                           head + b"a NUL \x00 in a line\r\n.\r\n")
    assert (code, text[:5]) == (554, "5.6.0"), text
    gateway.send(customer, ["dr@clinic.test"], subject="after")
    received = mx.wait_for(1)
    assert len(received) == 1 and received[0].rcpt_to == ["dr@clinic.test"]
    assert b"\x00" not in received[0].data and b"smuggled" not in received[0].data


# --- 5. mail loops -------------------------------------------------------------------


def _with_hops(count: int) -> bytes:
    trace = b"".join(
        b"Received: from relay%d.test by relay%d.test; Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        % (i, i + 1)
        for i in range(count)
    )
    return trace + make_message("alice@hospital.test", ["dr@clinic.test"], "loop")


def test_a_message_with_more_than_fifty_received_fields_is_refused_as_a_loop(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    world.domain("clinic.test")
    code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                           _with_hops(51) + b".\r\n")
    assert (code, text[:5]) == (554, "5.4.6") and "loop" in text, text
    api = Api(gateway).login("Ziekenhuis")
    r = api.post("/v1/messages", content=_with_hops(51), headers={"Content-Type": "message/rfc822"})
    assert "loop" in problem(r, 422)["detail"]
    code, text = _send_raw(gateway, customer, "alice@hospital.test", ["dr@clinic.test"],
                           _with_hops(50) + b".\r\n")
    assert code == 250, text
