"""Resource exhaustion: every attack is bounded (an error reply, or the connection is
closed), and a well-behaved customer dialling from another address is measured to be
served meanwhile — it gets its 250 and its message is delivered while the attack runs.

The module's gateway runs with small limits so that the bounds are reached quickly:
idle 2 s, data 3 s, TLS handshake 2 s, 4 sessions per client address, 3 recipients,
200 kB, 3 failed logins.
"""

from __future__ import annotations

import base64
import select
import time
from typing import Any

import pytest

from tests.e2e.world import Customer, World, make_message
from tests.harness.dns import AuthoritativeDns
from tests.security.attack import (
    ATTACKER,
    LISTENERS,
    Background,
    Client,
    accepted,
    connect,
    delivered,
    marker,
    received_with,
    served_meanwhile,
    session,
)
from tests.security.site import *  # noqa: F403  (module-scoped gateway fixtures)
from tests.security.site import Site

IDLE, DATA, HANDSHAKE = 2.0, 3.0, 2.0
MAX_SIZE = 200_000


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {
        "submission__idle_timeout": IDLE,
        "submission__data_timeout": DATA,
        "submission__max_connections_per_client": 4,
        "submission__max_recipients": 3,
        "submission__max_message_size": MAX_SIZE,
        "submission__auth_failure_limit": 3,
        "submission__tls_handshake_timeout": HANDSHAKE,
        "submission__max_junk_commands": 20,
    }


@pytest.fixture(scope="module")
def lab(site: Site, dns: AuthoritativeDns, world: World) -> Customer:
    """A third tenant (lab.test), S/MIME-signing (`account update --smime on`)."""
    world.domain("lab.test")
    who = site.gw.onboard(dns, "Lab", "lab.test")
    site.gw.cli("account", "update", "Lab", "--smime", "on")
    return who


@pytest.fixture(scope="module")
def victim(site: Site, lab: Customer) -> Customer:
    """A second credential of Lab, for the brute-force test to lock out."""
    cred = site.gw.cli("credential", "create", "Lab", "--kind", "smtp")
    return Customer(lab.account_id, lab.name, lab.domain, cred["username"], cred["password"])


def _good(site: Site) -> None:
    served_meanwhile(site.gw, site.a, site.clinic, "x@clinic.test")


def trickle(c: Client, data: bytes, every: float = 0.2, limit: int = 300) -> tuple[int, str]:
    """Send `data` one octet at a time, over and over, until the server answers."""
    for i in range(limit):
        if c.buf or select.select([c.sock], [], [], 0)[0]:
            break
        try:
            c.sock.send(data[i % len(data) : i % len(data) + 1])
        except OSError:
            break
        time.sleep(every)
    else:
        raise AssertionError(f"the server still listened after {limit} octets")
    return c.reply()


# -- slowloris -------------------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
def test_slowloris_command_line_is_cut_off(listener: str, site: Site) -> None:
    def attack() -> tuple[tuple[int, str], bool]:
        c = connect(site.gw, listener, source=ATTACKER)
        return trickle(c, b"EHLO slow.test"), c.closed()

    running = Background(attack)
    _good(site)
    reply, closed = running.result()
    assert reply == (421, "4.4.2 Idle timeout, closing connection")
    assert closed


def test_slowloris_after_login_is_cut_off(site: Site) -> None:
    def attack() -> tuple[tuple[int, str], bool]:
        c = session(site.gw, "starttls", site.b, source=ATTACKER)
        return trickle(c, b"MAIL FROM:<bob@bank.test>"), c.closed()

    running = Background(attack)
    _good(site)
    reply, closed = running.result()
    assert reply == (421, "4.4.2 Idle timeout, closing connection")
    assert closed


@pytest.mark.parametrize("listener", LISTENERS)
def test_slowloris_in_data_is_cut_off_and_nothing_accepted(listener: str, site: Site) -> None:
    """Whole lines, each well inside the idle timeout: the data timeout bounds them all."""
    before = accepted(site.gw)

    def attack() -> tuple[tuple[int, str], bool]:
        c = session(site.gw, listener, site.b, source=ATTACKER)
        assert c.cmd("MAIL FROM:<bob@bank.test>")[0] == 250
        assert c.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"From: bob@bank.test\r\nSubject: slow\r\n\r\n")
        return trickle(c, b"a slow line\r\n", every=0.1), c.closed()

    running = Background(attack)
    _good(site)
    reply, closed = running.result()
    assert reply == (421, "4.4.2 Idle timeout, closing connection")
    assert closed
    assert accepted(site.gw) == before + 1, "only the well-behaved message"


HALF_OPEN = {
    "silent on the implicit-TLS port": ("implicit", b""),
    "half a ClientHello on the implicit-TLS port": ("implicit", b"\x16\x03\x01\x02\x00\x01"),
    "silent after STARTTLS": ("starttls", b""),
    "half a ClientHello after STARTTLS": ("starttls", b"\x16\x03\x01\x02\x00\x01"),
}


@pytest.mark.parametrize(("listener", "partial"), HALF_OPEN.values(), ids=HALF_OPEN.keys())
def test_unfinished_tls_handshake_is_cut_off(listener: str, partial: bytes, site: Site) -> None:
    """submission.tls_handshake_timeout bounds a TLS handshake that never finishes."""

    def attack() -> bytes:
        if listener == "implicit":
            c = Client(site.gw.tls_port, source=ATTACKER)
        else:
            c = connect(site.gw, "starttls", source=ATTACKER)
            assert c.cmd("EHLO client.test")[0] == 250
            assert c.cmd("STARTTLS")[0] == 220
        c.sock.sendall(partial)
        received = b""
        while True:  # until the gateway closes; a socket timeout (15 s) fails the test
            try:
                chunk = c.sock.recv(4096)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk

    running = Background(attack)
    _good(site)
    received = running.result()
    assert b"220" not in received and b"250" not in received, received[:80]


# -- long lines, many errors --------------------------------------------------------------


def test_endless_command_line_is_cut_off(site: Site) -> None:
    def attack() -> tuple[tuple[int, str], bool]:
        c = connect(site.gw, "starttls", source=ATTACKER)
        for _ in range(2000):  # 64 KiB at a time, never a line end, until it answers
            if select.select([c.sock], [], [], 0)[0]:
                break
            c.sock.sendall(b"A" * 65536)
            time.sleep(0.01)
        return c.reply(), c.closed()

    running = Background(attack)
    _good(site)
    reply, closed = running.result()
    assert reply == (421, "4.4.2 Idle timeout, closing connection")
    assert closed


LONG_LINES = {
    "100 kB line": b"NOOP " + b"x" * 100_000,
    "MAIL over 512 octets": b"MAIL FROM:<" + b"a" * 600 + b"@bank.test>",
    "AUTH over 12288 octets": b"AUTH PLAIN " + b"QUFB" * 3100,
}


@pytest.mark.parametrize("line", LONG_LINES.values(), ids=LONG_LINES.keys())
def test_overlong_line_is_refused_and_the_session_goes_on(line: bytes, site: Site) -> None:
    with session(site.gw, "starttls", site.b, source=ATTACKER) as c:
        c.send(line + b"\r\n")
        code, text = c.reply()
        assert (code, text[:5]) == (500, "5.5.2"), text
        assert c.cmd("NOOP") == (250, "2.0.0 Ok")


@pytest.mark.parametrize("listener", LISTENERS)
def test_error_flood_is_cut_off(listener: str, site: Site) -> None:
    with session(site.gw, listener, source=ATTACKER) as c:
        c.send(b"".join(b"BOGUS %d\r\n" % i for i in range(50)))
        replies = []
        while True:
            code, text = c.reply()
            replies.append(code)
            if code == 421:
                break
        assert (code, text) == (421, "4.7.0 Too many errors, closing connection")
        assert replies[:-1] == [500] * 10
        assert c.closed()


@pytest.mark.parametrize("verb", ["NOOP", "RSET", "VRFY x", "HELP"])
def test_keep_alive_junk_commands_are_cut_off(verb: str, site: Site) -> None:
    # A NOOP just inside the idle timeout would otherwise hold a session slot for ever.
    with session(site.gw, LISTENERS[0], source=ATTACKER) as c:
        c.send(b"".join(verb.encode() + b"\r\n" for _ in range(30)))
        replies = []
        while True:
            code, text = c.reply()
            replies.append(code)
            if code == 421:
                break
        assert text == "4.7.0 Too many commands without a message; closing"
        assert len(replies) == 21 and 421 not in replies[:-1]
        assert c.closed()


# -- big messages -------------------------------------------------------------------------


HUGE_HEADERS = {
    "many header fields": b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 90) for i in range(3000)),
    "one field folded over and over": b"X-Folded: start\r\n" + b"\tmore folded text here\r\n" * 12000,
    "a header line over 998 octets": b"X-Long: " + b"h" * 2000 + b"\r\n",
}
HUGE_REPLY = {
    "many header fields": (552, "5.3.4"),
    "one field folded over and over": (552, "5.3.4"),
    "a header line over 998 octets": (554, "5.6.0"),
}


@pytest.mark.parametrize("kind", HUGE_HEADERS.keys())
def test_huge_header_block_is_refused(kind: str, site: Site) -> None:
    before = accepted(site.gw)

    def attack() -> tuple[tuple[int, str], tuple[int, str]]:
        with session(site.gw, "starttls", site.b, source=ATTACKER) as c:
            assert c.cmd("MAIL FROM:<bob@bank.test>")[0] == 250
            assert c.cmd("RCPT TO:<x@clinic.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(b"From: bob@bank.test\r\n" + HUGE_HEADERS[kind] + b"\r\nbody\r\n.\r\n")
            return c.reply(), c.cmd("NOOP")

    running = Background(attack)
    _good(site)
    (code, text), after = running.result()
    assert (code, text[:5]) == HUGE_REPLY[kind], text
    assert after == (250, "2.0.0 Ok"), "the session goes on after the refusal"
    assert accepted(site.gw) == before + 1, "only the well-behaved message"


def _mime(depth: int, parts: int) -> tuple[bytes, bytes]:
    """(top-level Content-Type field, body) of a multipart nested `depth` levels deep whose
    innermost level holds `parts` 8-bit text parts (which S/MIME signing must re-encode)."""
    body = b"".join(
        b"--b%d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart %d \xc3\xa9\r\n" % (depth, i)
        for i in range(parts)
    ) + b"--b%d--\r\n" % depth
    for level in range(depth - 1, 0, -1):
        body = (
            b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level, level + 1)
            + body
            + b"--b%d--\r\n" % level
        )
    return b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n", body


MIME_BOMBS = {
    # (nesting depth, parts), S/MIME account, the outcome
    "nested 600 deep": ((600, 1), False, "rejected"),
    "2500 parts": ((1, 2500), False, "rejected"),
    "nested 600 deep, S/MIME": ((600, 1), True, "rejected"),
    "2500 parts, S/MIME": ((1, 2500), True, "rejected"),
    "nested 15 deep, 900 parts, S/MIME": ((15, 900), True, "delivered"),
}


@pytest.mark.parametrize(("shape", "smime", "outcome"), MIME_BOMBS.values(), ids=MIME_BOMBS.keys())
def test_mime_bombs_are_bounded(
    shape: tuple[int, int], smime: bool, outcome: str, site: Site, lab: Customer
) -> None:
    """Deep nesting and many parts within the size limit: handled to an end. The scan
    stage's content limits (`scan.max_mime_depth` 20, `scan.max_mime_parts` 1000; counted
    without recursion) refuse a bomb with a reason (rejected, 5.6.0) before anything else
    walks it; within them, S/MIME signing re-encodes every part (its own nesting limit is
    tested in tests/unit/test_smime.py). Nothing of a refused bomb reaches the MX."""
    who = lab if smime else site.a
    head, body = _mime(*shape)
    assert len(body) < MAX_SIZE
    mark = marker()
    sender = f"alice@{who.domain}"
    with session(site.gw, "starttls", who, source=ATTACKER) as c:
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        assert c.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(
            f"From: {sender}\r\nTo: x@clinic.test\r\nSubject: {mark}\r\nMIME-Version: 1.0\r\n".encode()
            + head + body + b".\r\n"
        )
        code, text = c.reply()
    assert (code, text[:5]) == (250, "2.0.0"), text
    _good(site)
    shown = site.gw.wait_status(text.rsplit(" ", 1)[1], {"delivered", "rejected"}, timeout=30)
    assert shown["recipients"][0]["status"] == outcome, shown["recipients"]
    if outcome == "rejected":
        assert shown["recipients"][0]["enhanced"] == "5.6.0"
        assert received_with(mark, site.clinic) == []
    elif smime:
        assert b"multipart/signed" in delivered(site.clinic, mark).data
    else:
        assert body in delivered(site.clinic, mark).data


# -- recipients, connections, logins ------------------------------------------------------


def test_too_many_recipients_are_refused_one_by_one(site: Site) -> None:
    mark = marker()
    with session(site.gw, "starttls", site.b, source=ATTACKER) as c:
        rcpts = [f"r{i}@clinic.test" for i in range(500)]
        c.send(b"MAIL FROM:<bob@bank.test>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
        assert c.reply()[0] == 250
        replies = [c.reply() for _ in rcpts]
        assert replies[:3] == [(250, "2.1.5 Recipient ok")] * 3
        assert set(replies[3:]) == {(452, "4.5.3 Too many recipients")}
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("bob@bank.test", rcpts[:3], mark) + b".\r\n")
        code, text = c.reply()
        assert (code, text[:5]) == (250, "2.0.0"), text
    assert sorted(delivered(site.clinic, mark).rcpt_to) == sorted(rcpts[:3])


def test_one_client_cannot_take_every_connection(site: Site) -> None:
    hog = "127.0.0.80"  # its own address: no session of another test still counted
    held = [connect(site.gw, LISTENERS[i % 2], source=hog) for i in range(4)]
    try:
        for listener in LISTENERS:
            if listener == "implicit":
                extra = Client(site.gw.tls_port, implicit_tls=True, ctx=site.gw.client_context(), source=hog)
            else:
                extra = Client(site.gw.submission_port, source=hog)
            with extra:
                assert extra.reply() == (421, "4.7.0 Too many connections from your address, try again later")
                assert extra.closed()
        _good(site)  # from another address: served
    finally:
        for c in held:
            c.close()
    # The limit counts open sessions; it is no ban.
    deadline = time.monotonic() + 10
    while True:
        again = Client(site.gw.submission_port, source=hog)
        code, _ = again.reply()
        again.close()
        if code == 220 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 220


def _auth(c: Client, mechanism: str, user: str, password: str) -> tuple[int, str]:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    if mechanism == "PLAIN":
        return c.cmd(f"AUTH PLAIN {b64(chr(0) + user + chr(0) + password)}")
    code, _ = c.cmd("AUTH LOGIN")
    assert code == 334
    code, _ = c.cmd(b64(user))
    assert code == 334
    return c.cmd(b64(password))


@pytest.mark.parametrize(("mechanism", "source"), [("PLAIN", "127.0.0.67"), ("LOGIN", "127.0.0.68")])
def test_auth_brute_force_from_one_address_is_throttled(
    mechanism: str, source: str, site: Site
) -> None:
    def attack() -> list[int]:
        codes = []
        for attempt in range(3):  # three guesses for three names, on three connections
            with session(site.gw, "starttls", source=source) as c:
                codes.append(_auth(c, mechanism, f"guess{attempt}@lab.test", "password1")[0])
        with session(site.gw, "starttls", source=source) as c:
            code, text = _auth(c, mechanism, site.b.username, site.b.password)
            codes.append(code)
            assert text[:5] == "4.7.0", text
        return codes

    running = Background(attack)
    _good(site)
    assert running.result() == [535, 535, 535, 454], "then even the right password is not tried"


def test_auth_brute_force_on_one_username_is_throttled_from_anywhere(
    site: Site, victim: Customer
) -> None:
    for source in ("127.0.0.70", "127.0.0.71", "127.0.0.72"):
        with session(site.gw, "starttls", source=source) as c:
            assert _auth(c, "PLAIN", victim.username, "wrong")[0] == 535
    with session(site.gw, "starttls", source="127.0.0.73") as c:
        code, text = _auth(c, "PLAIN", victim.username, victim.password)
        assert (code, text[:5]) == (454, "4.7.0"), text
    _good(site)  # other customers are not locked out
