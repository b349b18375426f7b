"""Issue 14: the test address (`test@<server.hostname>`) at the inbound MX of the real
`secumail serve`.

A sender's server (here smtplib, as an MTA speaks) writes to `test@gw.secumail.test`. The
sender's domain lives in the fake internet: an SPF record naming 127.0.0.1 (where the
client connects from), a DKIM key (the message is signed with dkimpy), a DMARC record and
an MX with good TLS, where the report arrives. Over TLS the sender gets one report in
Dutch and English naming the TLS version and the SPF, DKIM and DMARC results; in plaintext
the message is refused with 554 5.7.10 and an explanation (their server bounces it to
them); a spoofed sender (SPF fail, no DKIM) gets 250 and nothing; over the rate limit, no
second report.
"""

from __future__ import annotations

import base64
import re
import smtplib
import time
from email import message_from_bytes, policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.api_client import Api
from tests.e2e.test_signing import signatures, verify_all
from tests.e2e.world import GATEWAY_HOST, GatewayProcess, World, _txt
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx

TEST_ADDRESS = f"test@{GATEWAY_HOST}"
SENDER = "alice@mailer.test"


@pytest.fixture
def inbound_port() -> int:
    return free_port()


@pytest.fixture
def gw(make_gateway, inbound_port: int) -> GatewayProcess:
    gateway = make_gateway(inbound__listen=[f"127.0.0.1:{inbound_port}"]).start()
    gateway._wait_listening(inbound_port)
    return gateway


@pytest.fixture
def dkim_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def publish_dkim(dns: AuthoritativeDns, domain: str, private_pem: bytes, selector: str = "s1") -> None:
    key = serialization.load_pem_private_key(private_pem, None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns.add(f"{selector}._domainkey.{domain}", "TXT", _txt(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"))


@pytest.fixture
def mailer(world: World, dns: AuthoritativeDns, dkim_key: bytes) -> HarnessMx:
    """mailer.test: SPF for 127.0.0.1, a DKIM key, DMARC p=reject, an MX with good TLS."""
    mx = world.domain("mailer.test")
    dns.add("mailer.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    publish_dkim(dns, "mailer.test", dkim_key)
    dns.add("_dmarc.mailer.test", "TXT", '"v=DMARC1; p=reject"')
    return mx


def a_message(sender: str = SENDER, subject: str = "Vertrouwelijk: uitslag 42") -> tuple[bytes, str]:
    message_id = f"<{time.time_ns()}.t@{sender.split('@')[1]}>"
    text = (
        f"From: Alice <{sender}>\r\nTo: {TEST_ADDRESS}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 07 Dec 2026 22:00:00 +0000\r\n"
        "\r\nGeheime inhoud: patient 12345.\r\n"
    )
    return text.encode(), message_id


def signed(message: bytes, private_pem: bytes, domain: str = "mailer.test") -> bytes:
    signature = dkim.sign(
        message, b"s1", domain.encode(), private_pem,
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
    )
    return signature + message


def send(gw: GatewayProcess, port: int, message: bytes, *, sender: str = SENDER, tls: bool = True,
         helo: str = "mx.mailer.test") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=30) as s:
        s.ehlo()
        if tls:
            s.starttls(context=gw.client_context())
            s.ehlo()
        assert s.mail(sender)[0] == 250
        code, text = s.rcpt(TEST_ADDRESS)
        assert code == 250, (code, text)
        return s.data(message)


def report_of(received_data: bytes) -> tuple[object, str]:
    msg = message_from_bytes(received_data, policy=policy.default)
    return msg, msg.get_content()


def dropped(gw: GatewayProcess) -> dict[str, int]:
    return gw.cli("queue")["test_address_dropped"]


def test_a_tls_sender_with_spf_and_dkim_gets_a_report_in_both_languages(
    gw: GatewayProcess, inbound_port: int, mailer: HarnessMx, dkim_key: bytes
) -> None:
    message, message_id = a_message()
    code, text = send(gw, inbound_port, signed(message, dkim_key))
    assert (code, text[:5]) == (250, b"2.0.0"), text
    assert b"secure route" in text
    [received] = mailer.wait_for(1, timeout=30)
    # to the envelope sender only, from the null sender (never bounced back), over TLS
    assert received.rcpt_to == [SENDER] and received.mail_from == ""
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    msg, body = report_of(received.data)
    assert msg["From"].addresses[0].addr_spec == TEST_ADDRESS
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == message_id and msg["References"] == message_id
    assert "goed / good" in msg["Subject"]
    # the connection facts and the results, in Dutch and English
    assert re.search(r"TLS-versie:\s+TLSv1\.3", body) and re.search(r"TLS version:\s+TLSv1\.3", body)
    assert re.search(r"SPF:\s+pass \(mailer\.test\)", body)
    assert re.search(r"DKIM:\s+pass \(d=mailer\.test, s=s1\)", body)
    assert re.search(r"DMARC:\s+pass \(mailer\.test, p=reject\)", body)
    assert "Oordeel: GOED" in body and "Verdict: GOOD" in body
    assert "HELO/EHLO-naam:       mx.mailer.test" in body
    assert "Clientcertificaat:" in body and "Client certificate:" in body
    # nothing of the message itself
    assert "uitslag" not in body and "12345" not in body and "Vertrouwelijk" not in msg["Subject"]
    assert 'msg="test report' in gw.log() and "12345" not in gw.log()


def test_a_plaintext_sender_is_refused_with_the_explanation_and_gets_no_report(
    gw: GatewayProcess, inbound_port: int, mailer: HarnessMx, dkim_key: bytes
) -> None:
    message, _ = a_message()
    code, text = send(gw, inbound_port, signed(message, dkim_key), tls=False)
    assert code == 554, text
    assert text.startswith(b"5.7.10 ")
    explanation = text.decode()
    assert "without TLS" in explanation and "zonder TLS" in explanation
    assert "STARTTLS" in explanation
    assert dropped(gw) == {"plaintext": 1}
    assert "test report" not in gw.log()  # nothing queued: the 554 came after the decision
    assert mailer.received == []


def test_a_spoofed_sender_gets_250_and_no_report(
    gw: GatewayProcess, inbound_port: int, world: World, dns: AuthoritativeDns, mailer: HarnessMx,
    dkim_key: bytes,
) -> None:
    victim_mx = world.domain("victim.test")
    dns.add("victim.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')  # not the client's address
    dns.add("_dmarc.victim.test", "TXT", '"v=DMARC1; p=reject"')
    message, _ = a_message("ceo@victim.test")
    code, text = send(gw, inbound_port, message, sender="ceo@victim.test")
    assert (code, text[:5]) == (250, b"2.0.0"), text  # the same answer: no probing
    assert dropped(gw) == {"unverified_sender": 1}
    assert "test report" not in gw.log()  # queued before the 250 if at all: nothing was
    # Signed by another domain (mailer.test's valid key) does not vouch for victim.test.
    message, _ = a_message("ceo@victim.test")
    code, _ = send(gw, inbound_port, signed(message, dkim_key), sender="ceo@victim.test")
    assert code == 250
    assert dropped(gw) == {"unverified_sender": 2}
    # A genuine sender is still answered, and only it.
    message, message_id = a_message()
    assert send(gw, inbound_port, signed(message, dkim_key))[0] == 250
    [received] = mailer.wait_for(1, timeout=30)
    assert report_of(received.data)[0]["In-Reply-To"] == message_id
    assert victim_mx.received == []
    metrics = Api(gw).client.get("/metrics").text
    assert 'secumail_test_address_dropped_total{reason="unverified_sender"} 2' in metrics


def test_over_the_rate_limit_no_second_report(
    make_gateway, inbound_port: int, mailer: HarnessMx, dkim_key: bytes
) -> None:
    gw = make_gateway(
        inbound__listen=[f"127.0.0.1:{inbound_port}"], inbound__test_replies_per_domain_per_hour=1
    ).start()
    gw._wait_listening(inbound_port)
    first, first_id = a_message()
    assert send(gw, inbound_port, signed(first, dkim_key))[0] == 250
    second, _ = a_message()
    code, text = send(gw, inbound_port, signed(second, dkim_key))
    assert (code, text[:5]) == (250, b"2.0.0")
    assert dropped(gw) == {"rate_domain": 1}
    assert len(re.findall(r"test report \w+ queued", gw.log())) == 1
    [received] = mailer.wait_for(1, timeout=30)
    assert report_of(received.data)[0]["In-Reply-To"] == first_id


def test_without_spf_dkim_or_dmarc_records_the_report_says_what_to_fix(
    gw: GatewayProcess, inbound_port: int, world: World, dns: AuthoritativeDns, dkim_key: bytes
) -> None:
    """DKIM alone authenticates the sender (aligned d=); no SPF and no DMARC record: the
    verdict is "to improve", with the fixes in both languages."""
    mx = world.domain("plain.test")
    publish_dkim(dns, "plain.test", dkim_key)
    message, _ = a_message("bob@plain.test")
    code, _ = send(gw, inbound_port, signed(message, dkim_key, "plain.test"), sender="bob@plain.test",
                   helo="mx.plain.test")
    assert code == 250
    [received] = mx.wait_for(1, timeout=30)
    msg, body = report_of(received.data)
    assert "te verbeteren / to improve" in msg["Subject"]
    assert "Oordeel: TE VERBETEREN" in body and "Verdict: TO IMPROVE" in body
    assert re.search(r"SPF:\s+none \(plain\.test\)", body)
    assert "v=spf1 ip4:127.0.0.1 -all" in body  # the record to publish, for this server
    assert "Publish a DMARC record at _dmarc.plain.test" in body
    assert "Publiceer een DMARC-record op _dmarc.plain.test" in body


def test_the_test_address_can_be_turned_off(make_gateway, inbound_port: int) -> None:
    gw = make_gateway(inbound__listen=[f"127.0.0.1:{inbound_port}"], inbound__test_address="").start()
    gw._wait_listening(inbound_port)
    with smtplib.SMTP("127.0.0.1", inbound_port, local_hostname="mx.mailer.test", timeout=20) as s:
        s.ehlo()
        s.mail(SENDER)
        code, text = s.rcpt(TEST_ADDRESS)
        assert (code, text[:5]) == (550, b"5.1.1")


def test_the_report_is_signed_with_the_gateway_domain_when_its_keys_are_published(
    gw: GatewayProcess, inbound_port: int, mailer: HarnessMx, dkim_key: bytes, dns: AuthoritativeDns
) -> None:
    for record in gw.cli("domain", "records", GATEWAY_HOST)["records"]:
        if record["required"]:
            dns.add(record["name"], "TXT", _txt(record["value"]))
    assert gw.cli("domain", "verify", GATEWAY_HOST)["dkim_published"]
    message, _ = a_message()
    assert send(gw, inbound_port, signed(message, dkim_key))[0] == 250
    [received] = mailer.wait_for(1, timeout=30)
    assert {s["d"] for s in signatures(received.data)} == {GATEWAY_HOST}
    assert verify_all(received.data, dns)
