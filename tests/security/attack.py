"""Tools of the attack suite: a raw client that can dial from any 127.0.0.x, sessions on
either listener, and what the gateway and the harness MX recorded.

Attacks come from 127.0.0.66 and up; the well-behaved customer that must still be served
meanwhile dials from 127.0.0.1, so per-client limits (failed logins, connections) that hit
the attacker are seen not to hit it.
"""

from __future__ import annotations

import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.e2e.raw_smtp import RawSmtp
from tests.e2e.world import Customer, GatewayProcess, make_message
from tests.harness.mx import HarnessMx, Received

ATTACKER = "127.0.0.66"
GOOD_CLIENT = "127.0.0.1"
LISTENERS = ("starttls", "implicit")


class Client(RawSmtp):
    """`RawSmtp` dialling from a chosen loopback address."""

    def __init__(
        self, port: int, *, implicit_tls: bool = False, ctx: ssl.SSLContext | None = None,
        source: str = GOOD_CLIENT, timeout: float = 15.0,
    ) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.ctx = ctx
        if implicit_tls:
            assert ctx is not None
            self.sock = ctx.wrap_socket(self.sock)
        self.buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raw_reply(self) -> tuple[int, str]:
        """A reply as (code, "x.y.z text"): the enhanced code is the first 5 characters."""
        return self.reply()


def connect(gw: GatewayProcess, listener: str, *, source: str = GOOD_CLIENT) -> Client:
    """Greeted, not yet EHLO'd, in TLS for the implicit-TLS listener."""
    if listener == "implicit":
        c = Client(gw.tls_port, implicit_tls=True, ctx=gw.client_context(), source=source)
    else:
        c = Client(gw.submission_port, ctx=gw.client_context(), source=source)
    code, text = c.reply()
    assert code == 220, text
    return c


def session(
    gw: GatewayProcess, listener: str = "starttls", who: Customer | None = None, *,
    source: str = GOOD_CLIENT,
) -> Client:
    """EHLO'd inside TLS (STARTTLS on `starttls`, implicit on `implicit`), logged in as `who`."""
    c = connect(gw, listener, source=source)
    assert c.cmd("EHLO client.test")[0] == 250
    if listener == "starttls":
        c.starttls()
        assert c.cmd("EHLO client.test")[0] == 250
    if who is not None:
        code, text = c.login(who)
        assert code == 235, text
    return c


def marker() -> str:
    return "m" + uuid.uuid4().hex[:16]


def submit(
    gw: GatewayProcess, who: Customer, rcpt: str, mark: str, *, listener: str = "starttls",
    source: str = GOOD_CLIENT,
) -> tuple[int, str]:
    """A well-behaved customer sends one ordinary message with `mark` as its subject."""
    sender = f"alice@{who.domain}"
    with session(gw, listener, who, source=source) as c:
        assert c.cmd(f"MAIL FROM:<{sender}>") == (250, "2.1.0 Sender ok")
        assert c.cmd(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 Recipient ok")
        assert c.cmd("DATA")[0] == 354
        c.send(make_message(sender, [rcpt], mark) + b".\r\n")
        reply = c.reply()
        c.cmd("QUIT")
        return reply


def delivered(mx: HarnessMx, mark: str, timeout: float = 20.0) -> Received:
    """Wait for the one message carrying `mark`; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in list(mx.received) if mark.encode() in m.data]
        if found:
            assert len(found) == 1, f"{mark} delivered {len(found)} times"
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"message {mark} not delivered to {mx.hostname} within {timeout}s")


def served_meanwhile(
    gw: GatewayProcess, who: Customer, mx: HarnessMx, rcpt: str, *, listener: str = "starttls"
) -> Received:
    """The well-behaved customer gets its 250 and its message is delivered."""
    mark = marker()
    code, text = submit(gw, who, rcpt, mark, listener=listener)
    assert (code, text[:5]) == (250, "2.0.0"), text
    return delivered(mx, mark)


def accepted(gw: GatewayProcess) -> int:
    """Messages the gateway has accepted from customers so far (its own database)."""
    url = gw.data_dir / "secumail.sqlite"
    with sqlite3.connect(f"file:{url}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM messages WHERE dsn_of IS NULL").fetchone()[0]


def assert_clean(*messages: Received) -> None:
    """No message holds a bare CR, a bare LF or a NUL."""
    for m in messages:
        stripped = m.data.replace(b"\r\n", b"")
        assert b"\r" not in stripped and b"\n" not in stripped, m.data[:200]
        assert b"\x00" not in m.data, m.data[:200]


def received_with(mark: str, *mxs: HarnessMx) -> list[Received]:
    """What the harness MX servers have received so far that carries `mark`."""
    return [m for mx in mxs for m in list(mx.received) if mark.encode() in m.data]


class Background:
    """Run `attack` in a thread while the test goes on; `result()` joins it."""

    def __init__(self, attack: Callable[[], Any]) -> None:
        self._attack = attack
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._attack()
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = 30.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the attack did not end within its bound"
        if self._error is not None:
            raise self._error
        return self._result
