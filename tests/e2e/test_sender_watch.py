"""Watching senders, against the real `secumail serve` (issue 14): a sender whose TLS
falls below what it used before, and a burst of failed logins, are told to the account
once — a signed webhook and a mail to its notify address — and once more when over."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import ssl
import time

import httpx
import pytest

from tests.e2e.api_client import Api
from tests.e2e.raw_smtp import RawSmtp
from tests.e2e.world import Customer, GatewayProcess, World, make_message, queue_id
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx

EVENTS = ["sender_tls_warning", "auth_failures"]


def _receiver(world: World, dns: AuthoritativeDns, sts_server, api: Api):
    receiver = sts_server()
    dns.add("hooks.hospital.test", "A", World.STS_IP)
    receiver.add_certificate("hooks.hospital.test", world.ca.issue("hooks.hospital.test"))
    receiver.set_route("/hooks", 200, {"Content-Type": "text/plain"}, "ok", host="hooks.hospital.test")
    created = api.post(
        "/v1/webhooks", json={"url": "https://hooks.hospital.test/hooks", "events": EVENTS}
    )
    assert created.status_code == 201, created.text
    return receiver


def _events(receiver) -> list[dict]:
    return [
        json.loads(r.body) for r in receiver.requests if r.method == "POST" and r.path == "/hooks"
    ]


def _wait_events(receiver, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _events(receiver)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{n} webhook events expected, got {_events(receiver)}")


def _alert_mails(mx: HarnessMx, n: int) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mails = [m for m in mx.received if m.rcpt_to == ["it@hospital.test"]]
        if len(mails) >= n:
            return [email.message_from_bytes(m.data, policy=email.policy.default) for m in mails]  # type: ignore[misc]
        time.sleep(0.1)
    raise AssertionError(f"{n} alert mails expected at it@hospital.test, got {len(mx.received)}")


def _tls12(gw: GatewayProcess) -> ssl.SSLContext:
    """A sender's mail server that cannot do TLS 1.3 (an old OpenSSL, a pinned setting)."""
    ctx = gw.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _submit(gw: GatewayProcess, who: Customer, ctx: ssl.SSLContext, to: str) -> str:
    with smtplib.SMTP("127.0.0.1", gw.submission_port, local_hostname="sender.test", timeout=20) as c:
        c.ehlo()
        c.starttls(context=ctx)
        c.ehlo()
        c.login(who.username, who.password)
        c.mail("alice@hospital.test")
        assert c.rcpt(to)[0] == 250
        code, text = c.data(make_message("alice@hospital.test", [to], "watch"))
        assert code == 250, text
        return queue_id(text)


def _onboarded(
    make_gateway, dns, world: World, sts_port: int, **settings
) -> tuple[GatewayProcess, Customer, HarnessMx, HarnessMx]:
    gw = make_gateway(api__webhooks_port=sts_port, **settings).start()
    own = world.domain("hospital.test")  # the customer's MX: its notify address is here
    other = world.domain("clinic.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test", notify="it@hospital.test", locale="nl")
    return gw, who, own, other


def test_a_sender_falling_to_tls12_is_told_once_and_its_recovery_once(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    gw, who, own, other = _onboarded(make_gateway, dns, world, sts_port)
    receiver = _receiver(world, dns, sts_server, Api(gw).login("Ziekenhuis"))
    modern = gw.client_context()
    _submit(gw, who, modern, "x@clinic.test")
    _submit(gw, who, _tls12(gw), "x@clinic.test")
    raised = _wait_events(receiver, 1)[0]
    assert raised["type"] == "sender_tls_warning"
    data = raised["data"]
    assert data["state"] == "raised" and data["channel"] == "smtp"
    assert data["username"] == who.username and data["credential_id"] == data["about"]
    assert data["before"]["version"] == "TLSv1.3" and data["now"]["version"] == "TLSv1.2"
    assert who.password not in json.dumps(raised)
    (mail,) = _alert_mails(own, 1)
    assert mail["Subject"] == f"Zwakkere TLS van afzender {who.username}"  # the account's language
    assert "TLSv1.2" in mail.get_content()
    # While it lasts: the CLI shows it, and more weak submissions tell nothing new.
    alerts = gw.cli("account", "alerts", "Ziekenhuis")
    assert [(a["kind"], a["about"]) for a in alerts] == [("sender_tls_warning", data["about"])]
    (cred,) = [c for c in gw.cli("credential", "list") if c["username"] == who.username]
    assert cred["tls"]["best"]["version"] == "TLSv1.3" and cred["tls"]["downgraded"] is True
    _submit(gw, who, _tls12(gw), "x@clinic.test")
    _submit(gw, who, modern, "x@clinic.test")
    events = _wait_events(receiver, 2)
    assert [(e["type"], e["data"]["state"]) for e in events] == [
        ("sender_tls_warning", "raised"),
        ("sender_tls_warning", "resolved"),
    ]
    assert len(_alert_mails(own, 2)) == 2
    assert gw.cli("account", "alerts", "Ziekenhuis") == []
    other.wait_for(4)  # every message was delivered all the same


def test_an_api_client_falling_to_tls12_is_told_once(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    gw, _who, own, other = _onboarded(make_gateway, dns, world, sts_port)
    api = Api(gw).login("Ziekenhuis")  # over TLS 1.3
    receiver = _receiver(world, dns, sts_server, api)
    send = {"from": "alice@hospital.test", "to": ["x@clinic.test"], "text": "t"}
    assert api.post("/v1/messages", json=send).status_code == 202
    old = httpx.Client(base_url=api.base, verify=_tls12(gw), timeout=30)
    gw.http_clients.append(old)
    headers = {"Authorization": f"Bearer {api.token}"}
    for _ in range(2):
        assert old.post("/v1/messages", json=send, headers=headers).status_code == 202
    (event,) = _wait_events(receiver, 1)
    assert event["type"] == "sender_tls_warning" and event["data"]["channel"] == "api"
    assert event["data"]["now"]["version"] == "TLSv1.2"
    assert len(_alert_mails(own, 1)) == 1
    (open_alert,) = api.get("/v1/alerts").json()
    assert open_alert["kind"] == "sender_tls_warning" and open_alert["about"] == event["data"]["about"]
    assert open_alert["detail"]["before"]["version"] == "TLSv1.3"
    other.wait_for(3)
    assert len(_events(receiver)) == 1


def test_a_burst_of_failed_logins_is_told_once_and_its_end_once(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    gw, who, own, _ = _onboarded(
        make_gateway, dns, world, sts_port,
        submission__auth_alert_failures=6, submission__auth_alert_window=8.0,
    )  # fmt: skip
    receiver = _receiver(world, dns, sts_server, Api(gw).login("Ziekenhuis"))
    wrong = Customer(who.account_id, who.name, who.domain, who.username, "guess-guess-guess")
    replies = []
    for _ in range(4):  # a guesser on fresh connections; the throttle closes after 5
        s = RawSmtp(gw.submission_port, ctx=gw.client_context())
        s.reply()
        s.cmd("EHLO guesser.test")
        s.starttls()
        s.cmd("EHLO guesser.test")
        replies += [s.login(wrong)[0] for _ in range(3)]
        s.cmd("QUIT")
    assert set(replies) == {535, 454}
    raised = _wait_events(receiver, 1)[0]
    assert raised["type"] == "auth_failures" and raised["data"]["state"] == "raised"
    assert raised["data"]["username"] == who.username and raised["data"]["failures"] == 6
    assert "guess-guess-guess" not in json.dumps(raised)
    (mail,) = _alert_mails(own, 1)
    assert mail["Subject"] == f"Mislukte aanmeldingen voor inloggegevens {who.username}"
    # Quiet for a whole window: told once that it is over.
    events = _wait_events(receiver, 2)
    assert [(e["type"], e["data"]["state"]) for e in events] == [
        ("auth_failures", "raised"),
        ("auth_failures", "resolved"),
    ]
    assert len(_alert_mails(own, 2)) == 2


def test_a_client_certificate_near_its_end_is_told_once_and_its_renewal_once(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    gw, who, own, other = _onboarded(
        make_gateway, dns, world, sts_port, submission__client_ca_file=str(world.ca.ca_file)
    )
    receiver = _receiver(world, dns, sts_server, Api(gw).login("Ziekenhuis"))
    _submit(gw, who, gw.client_context(), "x@clinic.test")  # no certificate: still welcome
    ending = world.ca.issue("mailserver.hospital.test", days_left=10)
    with_ending = gw.client_context()
    with_ending.load_cert_chain(ending.cert_file, ending.key_file)
    _submit(gw, who, with_ending, "x@clinic.test")
    _submit(gw, who, with_ending, "x@clinic.test")
    (raised,) = _wait_events(receiver, 1)
    data = raised["data"]
    assert raised["type"] == "sender_tls_warning" and data["state"] == "raised"
    assert data["reason"] == "client_certificate_expires"
    assert data["about"] == f"{data['credential_id']}/client-certificate"
    assert data["client_certificate"]["sha256"] == ending.fingerprint_sha256
    assert data["client_certificate"]["not_after"].startswith(ending.not_after.date().isoformat())
    (mail,) = _alert_mails(own, 1)
    assert mail["Subject"] == (
        f"Clientcertificaat van afzender {who.username} verloopt {ending.not_after.date().isoformat()}"
    )
    fresh = world.ca.issue("mailserver.hospital.test")
    with_fresh = gw.client_context()
    with_fresh.load_cert_chain(fresh.cert_file, fresh.key_file)
    _submit(gw, who, with_fresh, "x@clinic.test")
    events = _wait_events(receiver, 2)
    assert [(e["data"]["about"], e["data"]["state"]) for e in events] == [
        (data["about"], "raised"),
        (data["about"], "resolved"),
    ]
    assert len(_alert_mails(own, 2)) == 2
    other.wait_for(4)
    # A certificate no configured CA vouches for is refused in the handshake, never ignored.
    stranger = world.ca.self_signed("mailserver.hospital.test")
    with_stranger = gw.client_context()
    with_stranger.load_cert_chain(stranger.cert_file, stranger.key_file)
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        _submit(gw, who, with_stranger, "x@clinic.test")
