"""Issue 14: a real Postfix (Debian) as the recipient MX accepts a message, then bounces
it itself (the recipient has no mailbox: ``smtpd_reject_unlisted_recipient = no`` makes
it accept at RCPT and bounce afterwards, as a mail system behind a filter does), and sends
its own DSN (RFC 3464) to the message's return path; its transport for the gateway's
host name is the inbound MX of the real `secumail serve`. The recipient turns `bounced`
with Postfix's diagnostic, and the sender gets a notice."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import test_postfix_interop as interop
from tests.e2e.test_postfix_interop import DOMAIN, MX_HOST, _send, _tlsa
from tests.e2e.world import GATEWAY_HOST, Customer, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dnssec import SignedZoneDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import CertPair
from tests.harness.postfix import PostfixMx
from tests.harness.unbound import ValidatingResolver

dns = interop.dns  # the fixtures of the interop tests: DNSSEC-signed zone, Postfix's cert
postfix_cert = interop.postfix_cert

# Postfix's SMTP client, for the bounce it sends (not in the harness's receive-only set).
SMTP_CLIENT = "smtp      unix  - - n - - smtp\n"


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


@pytest.fixture
def bouncing_postfix(
    world: World, dns: SignedZoneDns, mx_port: int, postfix_cert: CertPair, inbound_port: int,
    request: pytest.FixtureRequest,
) -> Iterator[PostfixMx]:
    """Postfix as DOMAIN's MX with one mailbox (bob@): mail for anyone else is accepted,
    then bounced to its return path, which Postfix sends to the gateway's inbound MX."""
    ip = world.ip()
    dns.add(DOMAIN, "MX", f"10 {MX_HOST}.")
    dns.add(MX_HOST, "A", ip)
    workdir = Path(tempfile.mkdtemp(prefix="harness-postfix-"))
    mx = PostfixMx(
        ip, mx_port, MX_HOST, postfix_cert, workdir,
        main_cf={
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_maps": f"inline:{{ bob@{DOMAIN}=inbox/ }}",
            "smtpd_reject_unlisted_recipient": "no",
            "transport_maps": f"inline:{{ {GATEWAY_HOST}=smtp:[127.0.0.1]:{inbound_port} }}",
            "smtp_tls_security_level": "may",  # STARTTLS where offered, as MTAs do
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


def test_a_dsn_from_postfix_bounces_the_recipient(
    gateway: GatewayProcess, customer: Customer, bouncing_postfix: PostfixMx,
    postfix_cert: CertPair, dns: SignedZoneDns, mx_port: int, sender_mx: HarnessMx,
) -> None:
    _tlsa(dns, mx_port, postfix_cert.spki_sha256)
    qid = _send(gateway, customer, f"nobody@{DOMAIN}")
    shown = gateway.wait_status(qid, {"bounced"}, timeout=40)
    rcpt = shown["recipients"][0]
    assert rcpt["enhanced"] == "5.1.1", rcpt
    assert "unknown" in rcpt["reply"].lower(), rcpt
    kinds = [e["kind"] for e in shown["events"] if e["kind"] in ("delivered", "bounced")]
    assert kinds == ["delivered", "bounced"], "Postfix took it, then bounced it"
    log = bouncing_postfix.log()
    assert "relay=127.0.0.1[127.0.0.1]:" in log and "status=sent" in log, log[-3000:]
    assert "TLS connection established to 127.0.0.1" in log, "Postfix used the offered STARTTLS"
    notice = sender_mx.wait_for(1, timeout=20)[0]
    assert notice.rcpt_to == ["alice@hospital.test"] and notice.mail_from == ""
    assert b"Status: 5.1.1" in notice.data
