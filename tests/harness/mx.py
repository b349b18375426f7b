"""A recipient SMTP server ("harness MX") standing in for the domains Secumail delivers to.

Written on asyncio streams, it speaks enough RFC 5321 for a sending MTA: EHLO/HELO,
STARTTLS (RFC 3207), MAIL, RCPT, DATA with dot-unstuffing (RFC 5321 §4.5.2), RSET, NOOP,
QUIT, several messages per connection and pipelined commands (RFC 2920). It runs on its
own loop in a background thread, bound to one 127.0.0.x address, so several servers can
share the delivery port on different loopback addresses.

Behaviour is chosen per test: no STARTTLS, a bad or weak certificate, TLS 1.0 only
(`tls_min`/`tls_max`), scripted replies per stage or per recipient (`script`,
`script_rcpt`; a "421" reply closes the connection), slow replies (`stall`), and a
connection dropped in the middle of DATA (`drop_mid_data`). Messages that got a 2xx
after their data are kept in `received`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import ssl
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import check_loopback
from tests.harness.pki import CertPair
from tests.harness.server import LoopServer, tcp_listener

STAGES = ("connect", "ehlo", "starttls", "mail", "rcpt", "data", "message")
LEGACY_TLS = {ssl.TLSVersion.SSLv3, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1}
MAIL_RE = re.compile(r"FROM:\s*<([^<>]*)>\s*(.*)", re.IGNORECASE | re.DOTALL)
RCPT_RE = re.compile(r"TO:\s*<([^<>]*)>\s*(.*)", re.IGNORECASE | re.DOTALL)
LINE_LIMIT = 1 << 20


@dataclass
class Received:
    """One message the harness MX accepted (2xx after the end of data)."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes  # dot-unstuffed, line ends as sent, without the final ".\r\n"
    mail_params: dict[str, str]  # ESMTP parameters of MAIL, keys upper-cased
    tls_version: str | None  # "TLSv1.3", or None in plaintext
    cipher: str | None
    ehlo_name: str
    client_ip: str
    rcpt_params: dict[str, dict[str, str]] = field(default_factory=dict)
    wire: bytes = b""  # the data as sent, still dot-stuffed, without the final ".\r\n"


@dataclass
class _Session:
    """One connection: its stream, what the client said, the open transaction."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client_ip: str
    ehlo_name: str = ""
    tls_version: str | None = None
    cipher: str | None = None
    refused: bool = False  # greeted with 554: only QUIT is served (RFC 5321 §3.1)
    mail_from: str | None = None
    mail_params: dict[str, str] = field(default_factory=dict)
    rcpt_to: list[str] = field(default_factory=list)
    rcpt_params: dict[str, dict[str, str]] = field(default_factory=dict)

    def reset(self) -> None:
        self.mail_from, self.mail_params = None, {}
        self.rcpt_to, self.rcpt_params = [], {}


def _params(text: str) -> dict[str, str]:
    """ESMTP parameters ``KEY=VALUE KEY2`` (RFC 5321 §4.1.2), keys upper-cased."""
    out: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        out[key.upper()] = value
    return out


def _declared_size(params: dict[str, str]) -> int:
    """The SIZE parameter of MAIL (RFC 1870), 0 when absent or not a number."""
    value = params.get("SIZE", "")
    return int(value) if value.isdigit() else 0


def _has_weak_key(cert: CertPair) -> bool:
    key = x509.load_pem_x509_certificate(cert.cert_file.read_bytes()).public_key()
    return isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048


def _send_handshake_alerts() -> None:
    """Make the harness MX send its TLS alert when a handshake fails, as real servers do.

    asyncio (3.11) closes the transport on a failed server handshake without flushing
    the alert OpenSSL wrote (e.g. protocol_version for a TLS 1.0-only server), so the
    client would see a bare EOF instead of "unsupported protocol". This flushes it.
    """
    import asyncio.sslproto as sslproto

    original = sslproto.SSLProtocol._on_handshake_complete
    if getattr(original, "_harness_alerts", False):
        return

    def on_handshake_complete(self: Any, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()
        original(self, handshake_exc)

    on_handshake_complete._harness_alerts = True  # type: ignore[attr-defined]
    sslproto.SSLProtocol._on_handshake_complete = on_handshake_complete


_send_handshake_alerts()


def _quiet_tls_failures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed handshakes are expected here (the session sees them); log the rest."""
    if not isinstance(context.get("exception"), ssl.SSLError):
        loop.default_exception_handler(context)


class HarnessMx(LoopServer):
    """A recipient MX on ``host:port`` (127.0.0.x) with scripted behaviour."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cert: CertPair | None = None,
        starttls: bool = True,
        tls_min: ssl.TLSVersion | None = None,
        tls_max: ssl.TLSVersion | None = None,
        hostname: str = "mx.harness.test",
        pipelining: bool = True,
        require_starttls: bool = False,
        max_size: int = 50 * 1024 * 1024,
        extensions: tuple[str, ...] = (),
    ) -> None:
        check_loopback(host)
        super().__init__(f"harness-mx-{host}", host, port)
        self.hostname = hostname
        self.pipelining = pipelining
        self.require_starttls = require_starttls
        self.max_size = max_size
        self.extensions = extensions
        self.received: list[Received] = []
        self.connections = 0
        self.drop_after_data = 0  # the next N messages are dropped mid-DATA
        self._cond = threading.Condition()
        self._scripts: dict[str, deque[str]] = {stage: deque() for stage in STAGES}
        self._rcpt_scripts: dict[str, deque[str]] = {}
        self._stalls: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._tls = self._context(cert, tls_min, tls_max) if cert and starttls else None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _context(
        cert: CertPair, tls_min: ssl.TLSVersion | None, tls_max: ssl.TLSVersion | None
    ) -> ssl.SSLContext:
        if tls_max in LEGACY_TLS and tls_min is None:
            tls_min = tls_max  # "tls_max=TLSv1" alone means TLS 1.0 only
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        legacy = tls_min in LEGACY_TLS or tls_min == ssl.TLSVersion.MINIMUM_SUPPORTED
        if legacy or _has_weak_key(cert):
            # OpenSSL 3 refuses TLS < 1.2 (SHA-1/MD5 signatures) and RSA < 2048 at its
            # default security level; Python's cipher list also drops every SHA-1 suite.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # setting TLSv1/TLSv1_1 warns: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            if tls_min is not None:
                ctx.minimum_version = tls_min
            if tls_max is not None:
                ctx.maximum_version = tls_max
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
        return ctx

    # -- lifecycle ---------------------------------------------------------

    def _bind(self) -> tuple[socket.socket, ...]:
        return (tcp_listener(self.host, self._port, 128),)

    async def _listen(self, *sockets: socket.socket) -> None:
        (sock,) = sockets
        asyncio.get_running_loop().set_exception_handler(_quiet_tls_failures)
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=LINE_LIMIT)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- test controls (thread-safe) ---------------------------------------

    def script(self, stage: str, *replies: str) -> None:
        """Queue replies for ``stage``, one per occurrence; then the default resumes."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        with self._cond:
            self._scripts[stage].extend(replies)

    def script_rcpt(self, address: str, *replies: str) -> None:
        """Queue replies for RCPTs of ``address`` only (before any `script("rcpt")`)."""
        with self._cond:
            self._rcpt_scripts.setdefault(address.lower(), deque()).extend(replies)

    def stall(self, stage: str, seconds: float) -> None:
        """Wait ``seconds`` before every reply at ``stage`` (a slow server)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        with self._cond:
            self._stalls[stage] = seconds

    def drop_mid_data(self, count: int = 1) -> None:
        """Drop the connection after the first body line of the next ``count`` messages."""
        with self._cond:
            self.drop_after_data += count

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages were received; a copy of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(
                    f"harness MX {self.address}: expected {count} message(s) within "
                    f"{timeout}s, got {len(self.received)} over {self.connections} "
                    "connection(s)"
                )
            return list(self.received)

    def reset(self) -> None:
        """Forget received messages, connection count, scripts, stalls and drops."""
        with self._cond:
            self.received.clear()
            self.connections = 0
            self.drop_after_data = 0
            for queue in self._scripts.values():
                queue.clear()
            self._rcpt_scripts.clear()
            self._stalls.clear()

    def _take(self, stage: str, default: str, address: str | None = None) -> str:
        with self._cond:
            if address is not None:
                queue = self._rcpt_scripts.get(address.lower())
                if queue:
                    return queue.popleft()
            queue = self._scripts[stage]
            return queue.popleft() if queue else default

    # -- the protocol ------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._cond:
            self.connections += 1
        session = _Session(reader, writer, writer.get_extra_info("peername")[0])
        try:
            greeting = self._take("connect", f"220 {self.hostname} ESMTP harness")
            session.refused = greeting.startswith("554")
            if await self._reply(session, "connect", greeting):
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):
                        break  # EOF, possibly inside a partial line
                    text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
                    if not await self._command(session, text):
                        break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass  # the client went away, or sent a line past LINE_LIMIT
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's stream callback logs a cancelled handler)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _reply(self, session: _Session, stage: str, reply: str) -> bool:
        """Send a (possibly multi-line) reply; False when the connection must close."""
        wait = self._stalls.get(stage, 0.0)
        if wait:
            await asyncio.sleep(wait)
        session.writer.write(("\r\n".join(reply.splitlines()) + "\r\n").encode())
        await session.writer.drain()
        return not reply.startswith("421")

    async def _command(self, s: _Session, line: str) -> bool:
        """Answer one command line; False ends the connection."""
        verb, _, arg = line.partition(" ")
        verb, arg = verb.upper(), arg.strip()
        if verb == "QUIT":
            await self._reply(s, "quit", "221 2.0.0 Bye")
            return False
        if s.refused:
            return await self._reply(s, "refused", "503 5.5.1 No SMTP service here")
        if verb in ("EHLO", "HELO"):
            return await self._hello(s, verb, arg)
        if verb == "STARTTLS":
            return await self._starttls(s, arg)
        if verb == "MAIL":
            return await self._mail(s, arg)
        if verb == "RCPT":
            return await self._rcpt(s, arg)
        if verb == "DATA":
            return await self._data(s, arg)
        if verb == "RSET":
            s.reset()
            return await self._reply(s, "rset", "250 2.0.0 Ok")
        if verb == "NOOP":
            return await self._reply(s, "noop", "250 2.0.0 Ok")
        return await self._reply(s, "other", "500 5.5.2 Command unrecognized")

    def _capabilities(self, s: _Session, client: str) -> str:
        lines = [f"{self.hostname} greets {client}"]
        if self.pipelining:
            lines.append("PIPELINING")
        lines += ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", f"SIZE {self.max_size}"]
        if self._tls is not None and s.tls_version is None:
            lines.append("STARTTLS")
        lines += self.extensions
        return "\n".join(
            f"250{' ' if i == len(lines) - 1 else '-'}{text}" for i, text in enumerate(lines)
        )

    async def _hello(self, s: _Session, verb: str, arg: str) -> bool:
        if not arg:
            return await self._reply(s, "ehlo", f"501 5.5.4 Syntax: {verb} hostname")
        default = self._capabilities(s, arg) if verb == "EHLO" else f"250 {self.hostname}"
        reply = self._take("ehlo", default)
        if reply.startswith("2"):
            s.ehlo_name = arg
            s.reset()
        return await self._reply(s, "ehlo", reply)

    async def _starttls(self, s: _Session, arg: str) -> bool:
        if self._tls is None:
            return await self._reply(s, "starttls", "502 5.5.1 STARTTLS not offered")
        if s.tls_version is not None:
            return await self._reply(s, "starttls", "503 5.5.1 TLS already active")
        if arg:
            return await self._reply(s, "starttls", "501 5.5.4 STARTTLS takes no parameters")
        reply = self._take("starttls", "220 2.0.0 Ready to start TLS")
        if not await self._reply(s, "starttls", reply):
            return False
        if not reply.startswith("220"):
            return True
        # RFC 3207 §4.2: whatever the client sent after STARTTLS in clear is discarded.
        s.reader._buffer.clear()  # type: ignore[attr-defined]
        await s.writer.start_tls(self._tls)
        ssl_object = s.writer.get_extra_info("ssl_object")
        s.tls_version = ssl_object.version()
        s.cipher = ssl_object.cipher()[0]
        s.ehlo_name = ""  # the client must say EHLO again
        s.reset()
        return True

    async def _mail(self, s: _Session, arg: str) -> bool:
        match = MAIL_RE.fullmatch(arg)
        if not s.ehlo_name:
            reply = "503 5.5.1 Send EHLO first"
        elif self.require_starttls and s.tls_version is None:
            reply = "530 5.7.0 Must issue a STARTTLS command first"
        elif s.mail_from is not None:
            reply = "503 5.5.1 Sender already given"
        elif match is None:
            reply = "501 5.5.4 Syntax: MAIL FROM:<address>"
        elif _declared_size(_params(match[2])) > self.max_size:
            reply = "552 5.3.4 Message size exceeds fixed maximum message size"
        else:
            reply = self._take("mail", "250 2.1.0 Sender ok")
            if reply.startswith("2"):
                s.mail_from, s.mail_params = match[1], _params(match[2])
        return await self._reply(s, "mail", reply)

    async def _rcpt(self, s: _Session, arg: str) -> bool:
        match = RCPT_RE.fullmatch(arg)
        if s.mail_from is None:
            reply = "503 5.5.1 Need MAIL before RCPT"
        elif match is None:
            reply = "501 5.5.4 Syntax: RCPT TO:<address>"
        else:
            reply = self._take("rcpt", "250 2.1.5 Recipient ok", address=match[1])
            if reply.startswith("2"):
                s.rcpt_to.append(match[1])
                s.rcpt_params[match[1]] = _params(match[2])
        return await self._reply(s, "rcpt", reply)

    async def _data(self, s: _Session, arg: str) -> bool:
        if arg:
            return await self._reply(s, "data", "501 5.5.4 DATA takes no parameters")
        if s.mail_from is None:
            return await self._reply(s, "data", "503 5.5.1 Need MAIL command")
        if not s.rcpt_to:
            return await self._reply(s, "data", "554 5.5.1 No valid recipients")
        reply = self._take("data", "354 End data with <CR><LF>.<CR><LF>")
        if not reply.startswith("354"):
            s.reset()
            return await self._reply(s, "data", reply)
        await self._reply(s, "data", reply)
        with self._cond:
            drop = self.drop_after_data > 0
            if drop:
                self.drop_after_data -= 1
        body = bytearray()
        wire = bytearray()
        while True:
            line = await s.reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("client closed the connection inside DATA")
            if drop:
                s.writer.transport.abort()
                return False
            if line == b".\r\n":
                break
            wire += line
            body += line[1:] if line.startswith(b".") else line
        default = f"250 2.0.0 Ok: queued as H{next(self._ids):05d}"
        if len(body) > self.max_size:
            default = "552 5.3.4 Message size exceeds fixed maximum message size"
        reply = self._take("message", default)
        if reply.startswith("2"):
            message = Received(
                mail_from=s.mail_from,
                rcpt_to=list(s.rcpt_to),
                data=bytes(body),
                mail_params=dict(s.mail_params),
                tls_version=s.tls_version,
                cipher=s.cipher,
                ehlo_name=s.ehlo_name,
                client_ip=s.client_ip,
                rcpt_params=dict(s.rcpt_params),
                wire=bytes(wire),
            )
            with self._cond:
                self.received.append(message)
                self._cond.notify_all()
        s.reset()
        return await self._reply(s, "message", reply)
