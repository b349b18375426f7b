"""Issue 14: a real Postfix (Debian) as the sender's mail server writes to the test
address of the real `secumail serve`, as a user's server would.

The user hands a message for `test@gw.secumail.test` to their Postfix (the MX of
pf.dnssec.test, whose SPF record names the loopback network Postfix sends from); its
transport for the gateway's host name is the inbound MX. With STARTTLS (`may`, as MTAs
do) the report comes back into the user's mailbox at that Postfix, delivered over DANE.
Without TLS (`smtp_tls_security_level = none`) the gateway refuses at the end of DATA with
554 5.7.10, and Postfix itself bounces that explanation into the user's mailbox: what the
issue promises, seen from the user's side."""

from __future__ import annotations

import shutil
import smtplib
import tempfile
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.e2e import test_postfix_interop as interop
from tests.e2e.test_postfix_interop import DOMAIN, MX_HOST, _tlsa
from tests.e2e.world import GATEWAY_HOST, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dnssec import SignedZoneDns
from tests.harness.pki import CertPair
from tests.harness.postfix import PostfixMx
from tests.harness.unbound import ValidatingResolver

dns = interop.dns  # the interop tests' fixtures: the DNSSEC-signed zone, Postfix's cert
postfix_cert = interop.postfix_cert

SMTP_CLIENT = "smtp      unix  - - n - - smtp\n"  # Postfix's SMTP client, to send to the gateway
USER = f"bob@{DOMAIN}"


@pytest.fixture
def inbound_port() -> int:
    return free_port()


@pytest.fixture
def gateway(
    make_gateway: Callable[..., GatewayProcess], validating_resolver: ValidatingResolver,
    inbound_port: int,
) -> GatewayProcess:
    gw = make_gateway(
        dns__nameservers=[validating_resolver.address],
        inbound__listen=[f"127.0.0.1:{inbound_port}"],
    ).start()
    gw._wait_listening(inbound_port)
    return gw


def users_postfix(
    world: World, dns: SignedZoneDns, mx_port: int, cert: CertPair, inbound_port: int,
    request: pytest.FixtureRequest, tls_level: str,
) -> Iterator[PostfixMx]:
    """The user's Postfix: MX of DOMAIN (mailboxes there), relays for loopback clients,
    sends mail for the gateway's host name to its inbound MX."""
    ip = world.ip()
    dns.add(DOMAIN, "MX", f"10 {MX_HOST}.")
    dns.add(MX_HOST, "A", ip)
    dns.add(DOMAIN, "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    dns.add(f"_dmarc.{DOMAIN}", "TXT", '"v=DMARC1; p=none"')
    workdir = Path(tempfile.mkdtemp(prefix="harness-postfix-"))
    mx = PostfixMx(
        ip, mx_port, MX_HOST, cert, workdir,
        main_cf={
            "virtual_mailbox_domains": DOMAIN,
            "mynetworks": "127.0.0.0/8",  # the user's own clients may send through it
            "transport_maps": f"inline:{{ {GATEWAY_HOST}=smtp:[127.0.0.1]:{inbound_port} }}",
            "smtp_tls_security_level": tls_level,
            "smtp_tls_loglevel": "1",
        },
        services=SMTP_CLIENT,
    )
    try:
        yield mx.start()
    finally:
        mx.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"--- postfix maillog ({workdir}) ---\n{mx.log()[-20000:]}")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postfix_tls(world, dns, mx_port, postfix_cert, inbound_port, request) -> Iterator[PostfixMx]:
    yield from users_postfix(world, dns, mx_port, postfix_cert, inbound_port, request, "may")


@pytest.fixture
def postfix_plain(world, dns, mx_port, postfix_cert, inbound_port, request) -> Iterator[PostfixMx]:
    yield from users_postfix(world, dns, mx_port, postfix_cert, inbound_port, request, "none")


def hand_to_postfix(postfix: PostfixMx) -> str:
    """The user's mail client hands Postfix a message for the test address; its Message-ID."""
    message_id = f"<{time.time_ns()}.pf@{DOMAIN}>"
    message = (
        f"From: Bob <{USER}>\r\nTo: {GATEWAY_HOST}\r\nSubject: Hoe staat mijn server ervoor?\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 07 Dec 2026 22:00:00 +0000\r\n\r\nHallo test.\r\n"
    ).encode()
    with smtplib.SMTP(postfix.ip, postfix.port, local_hostname="client.pf.dnssec.test", timeout=20) as s:
        s.ehlo()
        s.mail(USER)
        code, text = s.rcpt(f"test@{GATEWAY_HOST}")
        assert code == 250, (code, text)
        code, text = s.data(message)
        assert code == 250, (code, text)
    return message_id


def test_postfix_over_tls_gets_the_report_in_the_users_mailbox(
    gateway: GatewayProcess, postfix_tls: PostfixMx, postfix_cert: CertPair, dns: SignedZoneDns,
    mx_port: int,
) -> None:
    _tlsa(dns, mx_port, postfix_cert.spki_sha256)  # so the report can go back over DANE
    message_id = hand_to_postfix(postfix_tls)
    [stored] = postfix_tls.wait_for(1, timeout=40)
    log = postfix_tls.log()
    assert "TLS connection established to 127.0.0.1" in log, "Postfix used the offered STARTTLS"
    msg = message_from_bytes(stored, policy=policy.default)
    assert msg["From"].addresses[0].addr_spec == f"test@{GATEWAY_HOST}"
    assert msg["In-Reply-To"] == message_id
    assert b"with ESMTPS" in stored, "the report reached Postfix over TLS"
    body = msg.get_content()
    assert f"SPF:                  pass ({DOMAIN})" in body
    assert f"DMARC:                pass ({DOMAIN}, p=none)" in body  # SPF aligned, p=none
    assert "TLS-versie:           TLSv1." in body and "TLS version:        TLSv1." in body
    assert "DKIM:                 none / geen" in body  # this Postfix does not sign
    assert "Verdict: TO IMPROVE." in body and "p=quarantine or p=reject" in body
    assert "Hallo test" not in body and "Hoe staat" not in body
    shown = gateway.cli("queue")
    assert shown["test_address_dropped"] == {}


def test_postfix_in_plaintext_bounces_the_gateways_explanation_to_the_user(
    gateway: GatewayProcess, postfix_plain: PostfixMx,
) -> None:
    hand_to_postfix(postfix_plain)
    [bounce] = postfix_plain.wait_for(1, timeout=40)  # Postfix's own DSN, in bob's mailbox
    text = message_from_bytes(bounce, policy=policy.default)
    assert text["From"].addresses[0].username.upper() == "MAILER-DAEMON"
    flat = " ".join(bounce.decode(errors="replace").split())  # Postfix folds long lines
    assert "554-5.7.10 Your server sent this message without TLS" in flat
    assert "Uw server verstuurde dit bericht zonder TLS" in flat
    assert "in reply to end of DATA command" in flat
    assert "Status: 5.7.10" in flat
    assert gateway.cli("queue")["test_address_dropped"] == {"plaintext": 1}
