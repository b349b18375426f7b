"""STARTTLS and the TLS listeners, attacked (RFC 3207, RFC 8314, RFC 4954 §4).

- Plaintext pipelined after STARTTLS in the same packet is discarded, never acted on or
  answered inside TLS (CVE-2011-0411 class), and no reply to it leaks out in clear
  (the "response injection" half of the same bug, seen from the client).
- STARTTLS twice, STARTTLS before EHLO: refused; AUTH and MAIL before TLS: refused.
- Plaintext on the implicit-TLS port gets no SMTP reply at all.
- TLS 1.2 renegotiation is refused (OpenSSL's `s_client` asks for it; Python cannot).
- A recipient MX that injects a reply after its own 220 (the same attack on the gateway's
  client side): the injected line is never taken for a reply inside TLS.
"""

from __future__ import annotations

import base64
import select
import socket
import subprocess

import pytest

from tests.e2e.raw_smtp import RawSmtp
from tests.security.attack import (
    ATTACKER,
    LISTENERS,
    accepted,
    connect,
    delivered,
    marker,
    session,
    submit,
)
from tests.security.site import *  # noqa: F403  (module-scoped gateway fixtures)
from tests.security.site import Site


def _plain(who) -> str:
    return base64.b64encode(f"\0{who.username}\0{who.password}".encode()).decode()


def _nothing_pending(sock: socket.socket, wait: float = 0.3) -> bool:
    """True when the server has sent nothing more (within a short bounded wait)."""
    readable, _, _ = select.select([sock], [], [], wait)
    return not readable


INJECTED = {
    "NOOP": lambda site: b"NOOP\r\n",
    "MAIL": lambda site: b"MAIL FROM:<alice@hospital.test>\r\n",
    "AUTH": lambda site: f"AUTH PLAIN {_plain(site.a)}\r\n".encode(),
    "EHLO AUTH MAIL RCPT DATA": lambda site: (
        f"EHLO evil.test\r\nAUTH PLAIN {_plain(site.a)}\r\nMAIL FROM:<alice@hospital.test>\r\n"
        "RCPT TO:<x@clinic.test>\r\nDATA\r\n"
    ).encode(),
    "RSET QUIT": lambda site: b"RSET\r\nQUIT\r\n",
}


@pytest.mark.parametrize("inject", INJECTED.values(), ids=INJECTED.keys())
def test_commands_pipelined_after_starttls_are_discarded(inject, site: Site) -> None:
    c = connect(site.gw, "starttls", source=ATTACKER)
    assert c.cmd("EHLO client.test")[0] == 250
    c.send(b"STARTTLS\r\n" + inject(site))  # one packet
    assert c.reply() == (220, "2.0.0 Ready to start TLS")
    assert c.buf == b"" and _nothing_pending(c.sock), "no reply to the injected commands in clear"
    c.sock = c.ctx.wrap_socket(c.sock)
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and "AUTH PLAIN LOGIN" in text, "the first reply in TLS answers our EHLO"
    assert c.cmd("MAIL FROM:<alice@hospital.test>") == (530, "5.7.0 Authentication required"), (
        "the AUTH sent in clear was not applied"
    )
    assert c.cmd("NOOP") == (250, "2.0.0 Ok"), "the injected QUIT was not acted on"
    assert c.cmd("QUIT")[0] == 221


@pytest.mark.parametrize("listener", LISTENERS)
def test_starttls_twice_is_refused(listener: str, site: Site) -> None:
    c = session(site.gw, listener, source=ATTACKER)
    _code, text = c.cmd("EHLO client.test")
    assert "STARTTLS" not in text.split("\n"), "not offered inside TLS"
    assert c.cmd("STARTTLS") == (503, "5.5.1 Already in TLS")
    assert c.cmd("NOOP") == (250, "2.0.0 Ok"), "the TLS session goes on"


def test_starttls_out_of_order_or_with_argument(site: Site) -> None:
    c = connect(site.gw, "starttls", source=ATTACKER)
    assert c.cmd("STARTTLS") == (503, "5.5.1 Send EHLO first")
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("STARTTLS now") == (501, "5.5.4 STARTTLS takes no parameters")
    c.starttls()  # still possible afterwards
    assert c.cmd("EHLO client.test")[0] == 250


AUTH_IN_CLEAR = {
    "PLAIN initial": lambda who: f"AUTH PLAIN {_plain(who)}",
    "PLAIN": lambda who: "AUTH PLAIN",
    "LOGIN": lambda who: "AUTH LOGIN",
    "LOGIN initial": lambda who: "AUTH LOGIN " + base64.b64encode(who.username.encode()).decode(),
}


@pytest.mark.parametrize("auth", AUTH_IN_CLEAR.values(), ids=AUTH_IN_CLEAR.keys())
def test_auth_before_tls_is_refused_without_reading_credentials(auth, site: Site) -> None:
    # RFC 4954 §4: 538 5.7.11 — and no 334 challenge, so no password crosses in clear.
    c = connect(site.gw, "starttls", source=ATTACKER)
    _code, text = c.cmd("EHLO client.test")
    assert not any(line.startswith("AUTH") for line in text.split("\n")), "AUTH not offered"
    assert c.cmd(auth(site.a)) == (
        538, "5.7.11 Encryption required for requested authentication mechanism"
    )
    assert c.cmd("NOOP") == (250, "2.0.0 Ok")


def test_mail_rcpt_data_before_tls_are_refused(site: Site) -> None:
    before = accepted(site.gw)
    c = connect(site.gw, "starttls", source=ATTACKER)
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<alice@hospital.test>") == (530, "5.7.0 Must issue a STARTTLS command first")
    assert c.cmd("RCPT TO:<x@clinic.test>") == (503, "5.5.1 Need MAIL before RCPT")
    assert c.cmd("DATA") == (503, "5.5.1 Need MAIL before DATA")
    assert accepted(site.gw) == before


PLAINTEXT = {
    "EHLO": b"EHLO client.test\r\n",
    "STARTTLS": b"STARTTLS\r\n",
    "AUTH": b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    "MAIL": b"MAIL FROM:<alice@hospital.test>\r\n",
    "HTTP": b"GET / HTTP/1.0\r\n\r\n",
}


@pytest.mark.parametrize("payload", PLAINTEXT.values(), ids=PLAINTEXT.keys())
def test_plaintext_on_the_implicit_tls_port_gets_no_smtp(payload: bytes, site: Site) -> None:
    sock = socket.create_connection(("127.0.0.1", site.gw.tls_port), timeout=10, source_address=(ATTACKER, 0))
    with sock:
        sock.sendall(payload)
        received = b""
        while True:  # until the gateway closes (the handshake failed at once)
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    # At most a TLS alert record (content type 21), never an SMTP reply in clear.
    assert received == b"" or received[:1] == b"\x15", received[:80]
    assert b"220" not in received and b"ESMTP" not in received
    healthy = RawSmtp(site.gw.tls_port, implicit_tls=True, ctx=site.gw.client_context())
    assert healthy.reply()[0] == 220
    healthy.close()


@pytest.mark.parametrize("listener", LISTENERS)
def test_tls12_renegotiation_is_refused(listener: str, site: Site) -> None:
    """Client-initiated renegotiation (CPU exhaustion, CVE-2011-1473; TLS 1.3 has none)."""
    gw = site.gw
    target = (
        ["-connect", f"127.0.0.1:{gw.tls_port}"]
        if listener == "implicit"
        else ["-connect", f"127.0.0.1:{gw.submission_port}", "-starttls", "smtp"]
    )
    proc = subprocess.Popen(
        ["openssl", "s_client", "-tls1_2", "-CAfile", str(gw.data_dir / "tls" / "gateway.crt"), *target],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None
    try:
        # s_client reads its commands once the handshake is done; "R" renegotiates.
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the renegotiated session is still open:\n{out.decode()[-800:]}") from None
    text = out.decode(errors="replace")
    assert "Protocol  : TLSv1.2" in text, text[-800:]
    assert "RENEGOTIATING" in text
    assert "no renegotiation" in text, text[-800:]
    assert proc.returncode != 0


def test_reply_injected_by_a_recipient_mx_after_its_220_is_not_taken(site: Site) -> None:
    """The gateway as client: an MX (or a man in the middle before TLS) sends
    `220 Ready` and, in the same packet, a fake reply. Taken for the reply to the EHLO
    inside TLS, it would shift every reply of the session by one."""
    connections = site.clinic.connections
    site.clinic.script("starttls", "220 2.0.0 Ready to start TLS\n250 injected")
    mark = marker()
    code, text = submit(site.gw, site.a, "x@clinic.test", mark)
    assert (code, text[:5]) == (250, "2.0.0"), text
    message_id = text.rsplit(" ", 1)[1]
    shown = site.gw.wait_status(message_id, {"delivered", "deferred", "bounced", "refused_insecure"})
    assert "injected" not in str(shown), shown
    got = delivered(site.clinic, mark)  # the retry, or the first attempt when the line was dropped
    assert got.rcpt_to == ["x@clinic.test"]
    shown = site.gw.wait_status(message_id, {"delivered"})
    assert "injected" not in str(shown), shown
    assert site.clinic.connections > connections, "a new connection (and STARTTLS) was made"
