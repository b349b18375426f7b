"""Interoperability: Secumail delivers to a real Postfix (Debian) as the recipient MX,
authenticating its self-signed certificate by a DNSSEC-validated DANE-EE ``3 1 1``
record (RFC 7672 §3.1.1; RFC 7671 §5.1: with DANE-EE only the key matters, not names or
dates), over STARTTLS (RFC 3207)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.world import Customer, GatewayProcess, World, make_message
from tests.harness.dnssec import SignedZoneDns
from tests.harness.pki import CertPair
from tests.harness.postfix import PostfixMx
from tests.harness.unbound import ValidatingResolver

ZONE = "dnssec.test"
DOMAIN = f"pf.{ZONE}"
MX_HOST = f"mx10.{DOMAIN}"
MARKER = "postfix-interop-marker-7f3a"


@pytest.fixture
def dns(signed_dns: SignedZoneDns) -> SignedZoneDns:
    """In this module every record lives in the signing server (unsigned outside ZONE)."""
    return signed_dns


@pytest.fixture
def gateway(
    make_gateway: Callable[..., GatewayProcess], validating_resolver: ValidatingResolver
) -> GatewayProcess:
    return make_gateway(dns__nameservers=[validating_resolver.address]).start()


@pytest.fixture
def postfix_cert(world: World) -> CertPair:
    return world.ca.self_signed(MX_HOST)


@pytest.fixture
def postfix(
    world: World, dns: SignedZoneDns, mx_port: int, postfix_cert: CertPair,
    request: pytest.FixtureRequest,
) -> Iterator[PostfixMx]:
    """Postfix as the MX of DOMAIN on 127.0.0.x:mx_port (MX and A records published)."""
    ip = world.ip()
    dns.add(DOMAIN, "MX", f"10 {MX_HOST}.")
    dns.add(MX_HOST, "A", ip)
    # Not pytest's tmp_path: Postfix's delivery agent (as nobody) must reach the maildir.
    workdir = Path(tempfile.mkdtemp(prefix="harness-postfix-"))
    mx = PostfixMx(ip, mx_port, MX_HOST, postfix_cert, workdir)
    try:
        yield mx.start()
    finally:
        mx.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"--- postfix maillog ({workdir}) ---\n{mx.log()[-20000:]}")
        shutil.rmtree(workdir, ignore_errors=True)


def _tlsa(dns: SignedZoneDns, port: int, digest: str) -> None:
    dns.add(f"_{port}._tcp.{MX_HOST}", "TLSA", f"3 1 1 {digest}")


def _send(gateway: GatewayProcess, customer: Customer, to: str) -> str:
    sender = f"alice@{customer.domain}"
    body = make_message(sender, [to], "Interop", text=f"Hello Postfix,\r\n{MARKER}\r\n")
    return gateway.send(customer, [to], body=body)


def test_postfix_receives_over_dane_authenticated_starttls(
    gateway: GatewayProcess, customer: Customer, postfix: PostfixMx, postfix_cert: CertPair,
    dns: SignedZoneDns, mx_port: int,
) -> None:
    _tlsa(dns, mx_port, postfix_cert.spki_sha256)
    qid = _send(gateway, customer, f"bob@{DOMAIN}")

    [stored] = postfix.wait_for(1, timeout=20)
    head, _, body = stored.partition(b"\n\n")
    assert MARKER.encode() in body
    assert b"\nDKIM-Signature:" in b"\n" + head, "signed by the gateway before delivery"
    assert f"Delivered-To: bob@{DOMAIN}".encode() in head
    assert b"with ESMTPS" in head, "Postfix's Received header records a TLS session"

    [(client, protocol, cipher)] = postfix.tls_sessions()
    assert protocol in {"TLSv1.2", "TLSv1.3"}, postfix.tls_log_lines()
    assert client.endswith("[127.0.0.1]") and cipher

    shown = gateway.wait_status(qid, {"delivered"})
    [recipient] = shown["recipients"]
    assert recipient["status"] == "delivered"
    attempt = shown["attempts"][-1]
    assert attempt["route_method"] == "dane"
    assert attempt["policy"].startswith("TLSA 3 1 1")
    assert attempt["policy"] == f"TLSA 3 1 1 {postfix_cert.spki_sha256}"


def test_postfix_with_a_wrong_tlsa_digest_is_refused_and_gets_nothing(
    gateway: GatewayProcess, customer: Customer, postfix: PostfixMx, postfix_cert: CertPair,
    dns: SignedZoneDns, mx_port: int,
) -> None:
    wrong = f"{int(postfix_cert.spki_sha256, 16) ^ 1:064x}"  # one bit off
    _tlsa(dns, mx_port, wrong)
    qid = _send(gateway, customer, f"bob@{DOMAIN}")

    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "DANE" in shown["recipients"][0]["reply"]
    deadline = time.monotonic() + 5
    while "disconnect from" not in postfix.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The gateway did reach Postfix and complete the handshake (it had to see the
    # certificate to reject it), then left before MAIL FROM: Postfix got nothing.
    assert len(postfix.tls_sessions()) == 1, postfix.log()
    assert postfix.received() == []
    assert ": client=" not in postfix.log(), "no transaction began"
