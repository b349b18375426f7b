"""The submission gateway's rules, against the real process (RFC 5321, 3207, 4954, 6409)."""

from __future__ import annotations

import smtplib
import ssl
import warnings

import pytest

from tests.e2e.api_client import Api, problem
from tests.e2e.raw_smtp import RawSmtp, open_session
from tests.e2e.world import Customer, GatewayProcess, World, make_message
from tests.harness.dns import AuthoritativeDns


def test_ehlo_offers_starttls_before_tls_and_auth_only_inside(gateway: GatewayProcess) -> None:
    s = RawSmtp(gateway.submission_port, ctx=gateway.client_context())
    assert s.reply()[0] == 220
    code, text = s.cmd("EHLO client.test")
    caps = text.split("\n")[1:]
    assert code == 250
    for cap in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "STARTTLS"):
        assert cap in caps
    assert any(c.startswith("SIZE ") for c in caps)
    assert not any(c.startswith("AUTH") for c in caps)
    s.starttls()
    code, text = s.cmd("EHLO client.test")
    caps = text.split("\n")[1:]
    assert "AUTH PLAIN LOGIN" in caps
    assert "STARTTLS" not in caps


def test_auth_and_mail_before_tls_are_refused(gateway: GatewayProcess, customer: Customer) -> None:
    s = RawSmtp(gateway.submission_port, ctx=gateway.client_context())
    s.reply()
    s.cmd("EHLO client.test")
    # RFC 4954 §4 / RFC 3207 §4: the credentials must never cross the wire in clear.
    assert s.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == (
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
    )
    code, text = s.cmd("MAIL FROM:<alice@hospital.test>")
    assert (code, text[:5]) == (530, "5.7.0")
    assert "STARTTLS" in text


def test_mail_before_auth_is_refused(gateway: GatewayProcess, customer: Customer) -> None:
    s = open_session(gateway)
    code, text = s.cmd("MAIL FROM:<alice@hospital.test>")
    assert (code, text) == (530, "5.7.0 Authentication required")


def test_wrong_password_then_throttled_even_with_the_right_one(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(submission__auth_failure_limit=3).start()
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    s = open_session(gw)
    for _ in range(3):
        wrong = Customer(who.account_id, who.name, who.domain, who.username, "not-the-password")
        assert s.login(wrong)[0] == 535
    code, text = s.login(who)
    assert (code, text[:5]) == (454, "4.7.0"), "throttled: the right password is not even checked"


def test_revoked_credential_cannot_log_in(gateway: GatewayProcess, customer: Customer) -> None:
    creds = gateway.cli("credential", "list")
    gateway.cli("credential", "revoke", creds[0]["id"])
    s = open_session(gateway)
    assert s.login(customer)[0] == 535


def test_implicit_tls_listener_accepts_auth_and_mail(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    s = RawSmtp(gateway.tls_port, implicit_tls=True, ctx=gateway.client_context())
    assert s.reply()[0] == 220
    code, text = s.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in text.split("\n")
    assert s.login(customer)[0] == 235
    assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
    assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(make_message("alice@hospital.test", ["x@clinic.test"], "465") + b".\r\n")
    code, text = s.reply()
    assert code == 250 and "queued as" in text
    assert mx.wait_for(1)[0].rcpt_to == ["x@clinic.test"]


class TestClosedNetwork:
    def test_envelope_sender_outside_verified_domains_is_refused(
        self, gateway: GatewayProcess, customer: Customer
    ) -> None:
        s = open_session(gateway, customer)
        code, text = s.cmd("MAIL FROM:<ceo@bank.test>")
        assert (code, text[:5]) == (550, "5.7.1")
        assert "bank.test is not a domain of your account" in text

    def test_header_from_outside_verified_domains_is_refused(
        self, gateway: GatewayProcess, customer: Customer, world: World
    ) -> None:
        mx = world.domain("clinic.test")
        s = open_session(gateway, customer)
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
        assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.send(make_message("ceo@bank.test", ["x@clinic.test"], "spoof") + b".\r\n")
        code, text = s.reply()
        assert (code, text[:5]) == (550, "5.7.1")
        assert "bank.test" in text
        assert mx.received == []

    def test_two_from_headers_are_refused(
        self, gateway: GatewayProcess, customer: Customer
    ) -> None:
        s = open_session(gateway, customer)
        s.cmd("MAIL FROM:<alice@hospital.test>")
        s.cmd("RCPT TO:<x@clinic.test>")
        assert s.cmd("DATA")[0] == 354
        msg = b"From: alice@hospital.test\r\nFrom: ceo@bank.test\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
        s.send(msg)
        code, text = s.reply()
        assert (code, text[:5]) == (550, "5.7.1")
        assert "exactly one From" in text

    def test_unverified_domain_cannot_send(
        self, gateway: GatewayProcess, customer: Customer
    ) -> None:
        gateway.cli("domain", "add", "Ziekenhuis", "new-unit.test")
        s = open_session(gateway, customer)
        code, text = s.cmd("MAIL FROM:<alice@new-unit.test>")
        assert (code, text[:5]) == (550, "5.7.1")
        # not "not yours": the customer is told what to do
        assert "new-unit.test is added to your account but not verified yet" in text, text
        assert "secumail domain verify new-unit.test" in text
        api = Api(gateway).login("Ziekenhuis")
        body = {"from": "alice@new-unit.test", "to": ["x@clinic.test"], "subject": "s", "text": "t"}
        refused = problem(api.post("/v1/messages", json=body), 403)
        assert "new-unit.test is added to your account but not verified yet" in refused["detail"]


class TestLimits:
    def test_command_line_over_512_octets(
        self, gateway: GatewayProcess, customer: Customer
    ) -> None:
        s = open_session(gateway, customer)
        code, text = s.cmd("MAIL FROM:<" + "a" * 600 + "@hospital.test>")
        assert (code, text[:5]) == (500, "5.5.2")
        assert s.cmd("NOOP")[0] == 250, "the session goes on after the error"

    def test_text_line_over_1000_octets(self, gateway: GatewayProcess, customer: Customer) -> None:
        s = open_session(gateway, customer)
        s.cmd("MAIL FROM:<alice@hospital.test>")
        s.cmd("RCPT TO:<x@clinic.test>")
        assert s.cmd("DATA")[0] == 354
        body = (
            make_message("alice@hospital.test", ["x@clinic.test"], "long")
            + b"y" * 1200
            + b"\r\n.\r\n"
        )
        s.send(body)
        code, text = s.reply()
        assert (code, text[:5]) == (554, "5.6.0")

    def test_too_many_recipients(self, make_gateway, dns: AuthoritativeDns, world: World) -> None:
        gw = make_gateway(submission__max_recipients=2).start()
        world.domain("hospital.test")
        who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
        s = open_session(gw, who)
        s.cmd("MAIL FROM:<alice@hospital.test>")
        assert s.cmd("RCPT TO:<a@clinic.test>")[0] == 250
        assert s.cmd("RCPT TO:<b@clinic.test>")[0] == 250
        assert s.cmd("RCPT TO:<c@clinic.test>") == (452, "4.5.3 Too many recipients")

    def test_message_over_size(self, make_gateway, dns: AuthoritativeDns, world: World) -> None:
        gw = make_gateway(submission__max_message_size=5000).start()
        world.domain("hospital.test")
        who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
        s = open_session(gw, who)
        code, text = s.cmd("MAIL FROM:<alice@hospital.test> SIZE=6000")
        assert (code, text[:5]) == (552, "5.3.4"), "declared size over the limit: refused at MAIL"
        s.cmd("MAIL FROM:<alice@hospital.test>")
        s.cmd("RCPT TO:<a@clinic.test>")
        assert s.cmd("DATA")[0] == 354
        s.send(
            make_message("alice@hospital.test", ["a@clinic.test"], "big")
            + (b"z" * 70 + b"\r\n") * 100
            + b".\r\n"
        )
        code, text = s.reply()
        assert (code, text[:5]) == (552, "5.3.4")
        assert s.cmd("NOOP")[0] == 250

    def test_idle_client_is_disconnected(self, make_gateway) -> None:
        gw = make_gateway(submission__idle_timeout=1.0).start()
        s = RawSmtp(gw.submission_port, ctx=gw.client_context())
        assert s.reply()[0] == 220
        code, text = s.reply()  # nothing sent: the server gives up on us
        assert (code, text[:5]) == (421, "4.4.2")
        assert s.closed()


SMUGGLING = {
    "bare LF line": b"hello\nworld\r\n.\r\n",
    "LF.LF end": b"hello\r\n\n.\n",
    "CRLF.LF end": b"hello\r\n.\n",
    "LF.CRLF end": b"hello\n.\r\n",
    "CR.CR end": b"hello\r.\r",
    "bare CR": b"hello\rworld\r\n.\r\n",
}


@pytest.mark.parametrize("payload", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_sequences_are_refused_not_normalised(
    payload: bytes, make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    # submission.bare_newline = "reject"; normalize mode (the default) and both modes of
    # every look-alike: tests/security/test_smtp_smuggling.py.
    gateway = make_gateway(submission__bare_newline="reject").start()
    customer = gateway.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    s = open_session(gateway, customer)
    s.cmd("MAIL FROM:<alice@hospital.test>")
    s.cmd("RCPT TO:<x@clinic.test>")
    assert s.cmd("DATA")[0] == 354
    smuggled = (
        b"MAIL FROM:<alice@hospital.test>\r\nRCPT TO:<y@clinic.test>\r\nDATA\r\n"
        b"From: alice@hospital.test\r\n\r\nsmuggled\r\n.\r\n"
    )
    headers = b"From: alice@hospital.test\r\nSubject: s\r\n\r\n"
    s.send(headers + payload + smuggled)
    code, text = s.reply()
    assert (code, text[:5]) == (554, "5.5.2"), text
    assert s.closed(), "after a bare line ending the session ends: nothing further is read"
    assert gateway.cli("queue")["queues"]["route"] == 0
    assert b"250" not in s.buf
    # Nothing accepted at all: no message record exists for either message.
    with smtplib.SMTP("127.0.0.1", gateway.submission_port) as probe:
        probe.noop()
    assert mx.received == []


def test_commands_pipelined_before_starttls_are_discarded(
    gateway: GatewayProcess, customer: Customer
) -> None:
    # CVE-2011-0411: the plaintext "NOOP" must not be answered inside the TLS session.
    s = RawSmtp(gateway.submission_port, ctx=gateway.client_context())
    s.reply()
    s.cmd("EHLO client.test")
    s.send(b"STARTTLS\r\nNOOP\r\n")
    code, _ = s.reply()
    assert code == 220
    s.sock = s.ctx.wrap_socket(s.sock)
    code, text = s.cmd("EHLO client.test")
    assert code == 250 and "AUTH" in text, "the first reply inside TLS answers our EHLO"
    code, _ = s.cmd("QUIT")
    assert code == 221


def _legacy_client(
    ctx: ssl.SSLContext, version: ssl.TLSVersion | None, ciphers: str | None
) -> ssl.SSLContext:
    ctx.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = version
    return ctx


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1, None),
        (ssl.TLSVersion.TLSv1_1, None),
        (ssl.TLSVersion.TLSv1_2, "AES128-SHA:AES256-SHA:AES128-GCM-SHA256"),
    ],
    ids=["TLS 1.0", "TLS 1.1", "TLS 1.2 without forward secrecy"],
)
def test_old_tls_and_weak_ciphers_are_refused(
    version: ssl.TLSVersion, ciphers: str | None, gateway: GatewayProcess
) -> None:
    # NCSC-NL TLS guidelines: TLS 1.2+ with ECDHE/DHE and AEAD only.
    ctx = _legacy_client(gateway.client_context(), version, ciphers)
    with pytest.raises(ssl.SSLError):
        RawSmtp(gateway.tls_port, implicit_tls=True, ctx=ctx)
    modern = RawSmtp(gateway.tls_port, implicit_tls=True, ctx=gateway.client_context())
    assert modern.reply()[0] == 220
    assert modern.sock.version() in ("TLSv1.2", "TLSv1.3")
