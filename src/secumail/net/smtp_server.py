"""The SMTP server (RFC 5321, RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 6409): submission
and the inbound MX.

One `SubmissionSession` per connection runs the protocol; everything that needs the
store or the pipeline is asked of a `SubmissionPolicy` (implemented in the pipeline
layer). The session enforces the transport rules itself: line and size limits, CRLF in
DATA (a bare LF taken as CRLF or refused, per `SessionLimits.bare_newline`; a bare CR
always refused), timeouts; and, when the policy is a relay for authenticated senders
(`SubmissionPolicy.authenticated_relay`, submission), no AUTH or MAIL outside TLS and no
MAIL before AUTH. Without it (the inbound MX, RFC 5321 §4.5.1's receiver for its own
addresses) AUTH is not offered, STARTTLS is offered but not required, and a recipient
the policy does not know, or cannot even parse, gets 550 5.1.1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Protocol

from secumail.errors import ListenError
from secumail.mail import reply as R
from secumail.mail.address import Address
from secumail.mail.endpoints import parse_host_port
from secumail.mail.reply import Reply
from secumail.mail.smtp_command import (
    MAX_AUTH_LINE,
    MAX_COMMAND_LINE,
    CommandError,
    NeedsSmtputf8,
    parse_command,
    parse_path,
)
from secumail.mail.smtp_data import BareNewline, DataProblem, DataReceiver
from secumail.net.channel import Channel, ChannelClosed, LineTooLong
from secumail.net.handoff import HandoffReceiver, HandoffSender
from secumail.net.tls import ClientCertificate, client_certificate

log = logging.getLogger("secumail.submission")


class AuthOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who authenticated: the account and the credential used."""

    account_id: str
    credential_id: str
    username: str


@dataclass(slots=True)
class Envelope:
    client_ip: str
    helo: str
    tls_version: str | None
    tls_cipher: str | None
    mail_from: Address | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpt_to: list[Address] = field(default_factory=list)
    # The client certificate, when the listener asked for one (submission.client_ca_file)
    # and the client sent one (verified in the handshake).
    client_cert: ClientCertificate | None = None

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.mail_params

    @property
    def requiretls(self) -> bool:
        """RFC 8689 §4: deliver only over verified TLS to MX hosts that support REQUIRETLS."""
        return "REQUIRETLS" in self.mail_params


class SubmissionPolicy(Protocol):
    # True (submission): TLS and AUTH before MAIL, and every later call gets the Principal.
    # False (inbound MX): no AUTH; the calls get None.
    authenticated_relay: bool

    async def authenticate(
        self, username: str, password: str, client_ip: str
    ) -> tuple[AuthOutcome, Principal | None]: ...

    async def check_sender(
        self, principal: Principal | None, address: Address | None
    ) -> Reply | None: ...

    async def check_recipient(self, principal: Principal | None, address: Address) -> Reply | None: ...

    async def admission(self) -> Reply | None: ...

    async def accept(
        self, principal: Principal | None, envelope: Envelope, message: bytes
    ) -> Reply: ...


NO_SUCH_RECIPIENT = Reply(550, "5.1.1", "No such recipient here")


@dataclass(frozen=True, slots=True)
class SessionLimits:
    hostname: str
    max_message_size: int
    max_recipients: int
    idle_timeout: float
    data_timeout: float
    max_errors: int
    tls_handshake_timeout: float = 30.0  # implicit TLS and STARTTLS
    # NOOP, RSET, VRFY, HELP a session may send (Postfix's smtpd_junk_command_limit): a
    # keep-alive loop must not hold a connection slot for ever.
    max_junk_commands: int = 100
    # A bare LF in commands and DATA (Postfix 3.9's smtpd_forbid_bare_newline): taken as
    # CRLF ("normalize") or refused ("reject"). Only CRLF "." CRLF ends the data either way.
    bare_newline: BareNewline = BareNewline.NORMALIZE


class _Close(Exception):
    """End the session after the reply already written."""


class SubmissionSession:
    def __init__(
        self,
        channel: Channel,
        policy: SubmissionPolicy,
        limits: SessionLimits,
        tls_context: ssl.SSLContext,
        *,
        implicit_tls: bool,
        server: SubmissionServer,
    ) -> None:
        self.ch = channel
        self.policy = policy
        self.limits = limits
        self.tls_context = tls_context
        self.server = server
        self.tls = implicit_tls
        self.helo: str | None = None
        self.principal: Principal | None = None
        self.envelope: Envelope | None = None
        self.errors = 0
        self.junk = 0
        self.in_data = False
        # MAIL was answered "busy" (451): the RCPT and DATA the client pipelined after it
        # (RFC 2920) get 503 without counting as the client's errors — a busy gateway must
        # not also cut the connection, which only brings a reconnect (TLS, AUTH) back.
        self.busy_refused = False
        self._peer_cert: ClientCertificate | None = None
        self._peer_cert_read = False

    # -- plumbing ------------------------------------------------------------------
    def send(self, reply: Reply) -> None:
        self.ch.write(reply.render())

    def _tls_info(self) -> tuple[str | None, str | None]:
        obj = self.ch.ssl_object()
        if obj is None:
            return None, None
        cipher = obj.cipher()
        return obj.version(), cipher[0] if cipher else None

    def _client_cert(self) -> ClientCertificate | None:
        """Read once per TLS session (a session may carry many messages)."""
        if not self._peer_cert_read:
            obj = self.ch.ssl_object()
            self._peer_cert = client_certificate(obj) if obj is not None else None
            self._peer_cert_read = True
        return self._peer_cert

    def _error(self, reply: Reply) -> None:
        self.send(reply)
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            self.send(R.TOO_MANY_ERRORS)
            raise _Close

    def _junk(self) -> None:
        self.junk += 1
        if self.junk > self.limits.max_junk_commands:
            self.send(Reply(421, "4.7.0", "Too many commands without a message; closing"))
            raise _Close

    def _sequence_error(self, reply: Reply) -> None:
        """Out of sequence: the client's error, unless it follows our own 451 to MAIL."""
        if self.busy_refused:
            self.send(reply)
        else:
            self._error(reply)

    async def run(self) -> None:
        try:
            self.send(Reply(220, "", f"{self.limits.hostname} {R.GREETING_TEXT}"))
            while True:
                if self.server.closing:
                    self.send(R.SHUTTING_DOWN)
                    break
                try:
                    async with asyncio.timeout(self.limits.idle_timeout):
                        line = await self.ch.read_line(MAX_AUTH_LINE)
                except LineTooLong:
                    self._error(R.LINE_TOO_LONG)
                    continue
                await self.handle_line(line)
                if not self.ch.has_input():
                    await self.ch.drain()
        except TimeoutError:
            self.send(R.TIMEOUT)
        except (_Close, ChannelClosed, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.ch.close()

    async def handle_line(self, line: bytes) -> None:
        if line.endswith(b"\r\n"):
            line = line[:-2]
        elif self.limits.bare_newline is BareNewline.NORMALIZE:
            # Postfix 3.9 "normalize": a command line ending in a bare LF is taken as if it
            # ended in CRLF. A CR inside the line is still refused by parse_command.
            line = line[:-1]
        else:
            self._error(R.NEEDS_CRLF)
            return
        try:
            cmd = parse_command(line)
        except CommandError as exc:
            self._error(Reply(500, "5.5.2", str(exc)))
            return
        if cmd.verb != "AUTH" and len(line) + 2 > MAX_COMMAND_LINE:
            self._error(R.LINE_TOO_LONG)
            return
        handler = getattr(self, "smtp_" + cmd.verb, None) if cmd.verb.isalpha() else None
        if handler is None:
            self._error(R.UNKNOWN_COMMAND)
            return
        await handler(cmd.argument)

    # -- commands ------------------------------------------------------------------
    async def smtp_EHLO(self, arg: str) -> None:
        if not arg:
            self._error(Reply(501, "5.5.4", "EHLO requires a domain or address literal"))
            return
        self.helo = arg
        self.envelope = None
        lines = [
            f"{self.limits.hostname} greets {arg}",
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
        ]
        if not self.tls:
            lines.append("STARTTLS")
        elif self.policy.authenticated_relay:
            # RFC 8689 §3: REQUIRETLS is offered only inside TLS.
            lines += ["AUTH PLAIN LOGIN", "REQUIRETLS"]
        self.send(Reply(250, "", "\n".join(lines)))

    async def smtp_HELO(self, arg: str) -> None:
        if not arg:
            self._error(Reply(501, "5.5.4", "HELO requires a domain"))
            return
        self.helo = arg
        self.envelope = None
        self.send(Reply(250, "", f"{self.limits.hostname}"))

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            self._error(Reply(501, "5.5.4", "STARTTLS takes no parameters"))
            return
        if self.tls:
            self._error(Reply(503, "5.5.1", "Already in TLS"))
            return
        if self.helo is None:
            self._error(Reply(503, "5.5.1", "Send EHLO first"))
            return
        self.send(R.READY_FOR_TLS)
        # RFC 3207 §4.2 / CVE-2011-0411: input pipelined before the handshake is dropped.
        discarded = self.ch.discard_input()
        if discarded:
            log.warning(
                "discarded %d octets pipelined before STARTTLS from %s", discarded, self.ch.peer[0]
            )
        await self.ch.start_tls(self.tls_context, timeout=self.limits.tls_handshake_timeout)
        self.tls = True
        self._peer_cert_read = False
        self.helo = None
        self.principal = None
        self.envelope = None

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.policy.authenticated_relay:
            self._error(Reply(502, "5.5.1", "AUTH not available here"))
            return
        if not self.tls:
            self._error(R.AUTH_NEEDS_TLS)
            return
        if self.helo is None or self.principal is not None or self.envelope is not None:
            self._error(R.BAD_SEQUENCE)
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            creds = await self._auth_plain(initial.strip())
        elif mechanism == "LOGIN":
            creds = await self._auth_login(initial.strip())
        else:
            self._error(Reply(504, "5.5.4", "Unrecognised authentication mechanism"))
            return
        if creds is None:
            return
        outcome, principal = await self.policy.authenticate(creds[0], creds[1], self.ch.peer[0])
        if outcome is AuthOutcome.OK and principal is not None:
            self.principal = principal
            self.send(R.AUTH_OK)
        elif outcome is AuthOutcome.THROTTLED:
            self.send(R.AUTH_THROTTLED)
        else:
            self._error(R.AUTH_FAILED)

    async def _sasl_response(self, challenge: str) -> bytes | None:
        self.send(Reply(334, "", challenge))
        await self.ch.drain()
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                line = await self.ch.read_line(MAX_AUTH_LINE)
        except LineTooLong:
            self._error(R.LINE_TOO_LONG)
            return None
        line = line.rstrip(b"\r\n")
        if line == b"*":
            self._error(Reply(501, "5.7.0", "Authentication cancelled"))
            return None
        return self._b64(line)

    def _b64(self, data: bytes | str) -> bytes | None:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self._error(Reply(501, "5.5.2", "Cannot decode base64 response"))
            return None

    async def _auth_plain(self, initial: str) -> tuple[str, str] | None:
        # RFC 4616: [authzid] NUL authcid NUL passwd; "=" is an empty initial response.
        if initial == "":
            raw = await self._sasl_response("")
        else:
            raw = b"" if initial == "=" else self._b64(initial)
        if raw is None:
            return None
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            self._error(Reply(501, "5.5.2", "Malformed PLAIN response"))
            return None
        try:
            authz, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self._error(Reply(501, "5.5.2", "Credentials must be UTF-8"))
            return None
        if authz and authz != user:
            self._error(R.AUTH_FAILED)
            return None
        return user, password

    async def _auth_login(self, initial: str) -> tuple[str, str] | None:
        user_raw = self._b64(initial) if initial else await self._sasl_response("VXNlcm5hbWU6")
        if user_raw is None:
            return None
        pass_raw = await self._sasl_response("UGFzc3dvcmQ6")
        if pass_raw is None:
            return None
        try:
            return user_raw.decode("utf-8"), pass_raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(Reply(501, "5.5.2", "Credentials must be UTF-8"))
            return None

    async def smtp_MAIL(self, arg: str) -> None:
        self.busy_refused = False
        if self.helo is None:
            self._error(Reply(503, "5.5.1", "Send EHLO first"))
            return
        if self.policy.authenticated_relay and not self.tls:
            self._error(R.TLS_REQUIRED)
            return
        if self.policy.authenticated_relay and self.principal is None:
            self._error(R.AUTH_REQUIRED)
            return
        if self.envelope is not None:
            self._error(Reply(503, "5.5.1", "Nested MAIL command"))
            return
        try:
            path = parse_path(arg, "FROM", allow_null=True)
        except NeedsSmtputf8 as exc:
            self._error(Reply(553, "5.6.7", str(exc)))
            return
        except CommandError as exc:
            self._error(Reply(501, "5.1.7", str(exc)))
            return
        problem = self._mail_params_problem(path.params)
        if problem is not None:
            self._error(problem)
            return
        busy = await self.policy.admission()
        if busy is not None:
            self.send(busy)
            self.busy_refused = True
            return
        refused = await self.policy.check_sender(self.principal, path.address)
        if refused is not None:
            self._error(refused)
            return
        version, cipher = self._tls_info()
        self.envelope = Envelope(
            self.ch.peer[0],
            self.helo,
            version,
            cipher,
            path.address,
            path.params,
            client_cert=self._client_cert(),
        )
        self.send(Reply(250, "2.1.0", "Sender ok"))

    def _mail_params_problem(self, params: dict[str, str | None]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    return Reply(501, "5.5.4", "SIZE needs a number")
                if int(value) > self.limits.max_message_size:
                    return R.TOO_BIG
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    return Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
            elif key == "SMTPUTF8":
                if value is not None:
                    return Reply(501, "5.5.4", "SMTPUTF8 takes no value")
            elif key == "AUTH":
                continue  # RFC 4954 §5: accepted, not trusted
            elif key == "REQUIRETLS":
                if value is not None:
                    return Reply(501, "5.5.4", "REQUIRETLS takes no value")
            else:
                return Reply(555, "5.5.4", f"Unsupported MAIL parameter {key}")
        return None

    async def smtp_RCPT(self, arg: str) -> None:
        if self.envelope is None or (self.policy.authenticated_relay and self.principal is None):
            self._sequence_error(Reply(503, "5.5.1", "Need MAIL before RCPT"))
            return
        if len(self.envelope.rcpt_to) >= self.limits.max_recipients:
            self.send(R.TOO_MANY_RECIPIENTS)
            return
        try:
            path = parse_path(arg, "TO", allow_null=False, smtputf8=self.envelope.smtputf8)
        except NeedsSmtputf8 as exc:
            self._error(Reply(553, "5.6.7", str(exc)))
            return
        except CommandError as exc:
            # The inbound MX: what it cannot parse is no address of its own (RFC 5321
            # §3.6.1/§7.1: and never one to relay to).
            self._error(
                Reply(501, "5.1.3", str(exc)) if self.policy.authenticated_relay else NO_SUCH_RECIPIENT
            )
            return
        if path.params:
            self._error(
                Reply(555, "5.5.4", f"Unsupported RCPT parameter {next(iter(path.params))}")
            )
            return
        assert path.address is not None
        refused = await self.policy.check_recipient(self.principal, path.address)
        if refused is not None:
            self._error(refused)
            return
        if path.address not in self.envelope.rcpt_to:
            self.envelope.rcpt_to.append(path.address)
        self.send(Reply(250, "2.1.5", "Recipient ok"))

    async def smtp_DATA(self, arg: str) -> None:
        if arg:
            self._error(Reply(501, "5.5.4", "DATA takes no parameters"))
            return
        if self.envelope is None or (self.policy.authenticated_relay and self.principal is None):
            self._sequence_error(Reply(503, "5.5.1", "Need MAIL before DATA"))
            return
        if not self.envelope.rcpt_to:
            self._error(Reply(554, "5.5.1", "No valid recipients"))
            return
        busy = await self.policy.admission()
        if busy is not None:
            self.send(busy)
            self.envelope = None
            return
        self.send(R.START_DATA)
        receiver = DataReceiver(self.limits.max_message_size, self.limits.bare_newline)
        self.in_data = True  # until the reply: a shutdown lets this transaction finish
        try:
            await self._receive(receiver)
            envelope, self.envelope = self.envelope, None
            if receiver.problem is DataProblem.TOO_BIG:
                self.send(R.TOO_BIG)
            elif receiver.problem is DataProblem.LINE_TOO_LONG:
                self.send(Reply(554, "5.6.0", "Line longer than 998 characters (RFC 5322 §2.1.1)"))
            elif receiver.problem is DataProblem.NUL:
                self.send(Reply(554, "5.6.0", "NUL character in message data refused (RFC 5322 §2.3)"))
            else:
                self.send(await self.policy.accept(self.principal, envelope, receiver.message()))
        finally:
            self.in_data = False

    async def _receive(self, receiver: DataReceiver) -> None:
        async with asyncio.timeout(self.limits.data_timeout):
            while True:
                chunk = await self.ch.read_some()
                used = receiver.feed(chunk)
                if receiver.problem is DataProblem.BARE_LINE_ENDING:
                    what = "CR" if receiver.normalize else "CR or LF"
                    self.send(
                        Reply(
                            554,
                            "5.5.2",
                            f"Bare {what} in message data refused (RFC 5321 §2.3.8); closing connection",
                        )
                    )
                    raise _Close
                if used is not None:
                    self.ch.unread(chunk[used:])
                    return

    async def smtp_RSET(self, arg: str) -> None:
        self._junk()
        self.envelope = None
        self.busy_refused = False
        self.send(R.OK)

    async def smtp_NOOP(self, arg: str) -> None:
        self._junk()
        self.send(R.OK)

    async def smtp_QUIT(self, arg: str) -> None:
        self.send(R.BYE)
        raise _Close

    async def smtp_VRFY(self, arg: str) -> None:
        self._junk()
        self.send(Reply(252, "2.5.0", "Cannot VRFY user"))

    async def smtp_HELP(self, arg: str) -> None:
        self._junk()
        self.send(Reply(214, "2.0.0", "See RFC 5321"))


def _listening_socket(host: str | None, port: int) -> socket.socket:
    if not host or host == "::":
        if socket.has_dualstack_ipv6():
            sock = socket.create_server(
                ("", port), family=socket.AF_INET6, backlog=1024, dualstack_ipv6=True
            )
        else:
            sock = socket.create_server(("", port), backlog=1024)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


class SubmissionServer:
    """Listeners for STARTTLS (`listen`) and implicit TLS (`listen_tls`), and their sessions.

    With worker processes (`handoff`, in the first one) this server accepts every
    connection itself and deals them out, see `secumail.net.handoff`; the others serve
    what they are handed (`receive_from`).
    """

    def __init__(
        self,
        policy: SubmissionPolicy,
        limits: SessionLimits,
        tls_context: ssl.SSLContext,
        *,
        max_connections: int,
        max_connections_per_client: int = 0,
        handoff: HandoffSender | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client  # 0: no limit
        self._per_client: dict[str, int] = {}
        self.closing = False
        self.handoff = handoff if handoff is not None and handoff.peers else None
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._handoff_from: HandoffReceiver | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self.sessions: set[SubmissionSession] = set()
        self._drained = asyncio.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self.bound: list[tuple[str, int, bool]] = []

    async def listen(self, listen: list[str], listen_tls: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for entries, implicit in ((listen, False), (listen_tls, True)):
            for entry in entries:
                try:
                    host, port = parse_host_port(entry)
                except ValueError as exc:
                    raise ListenError(entry, str(exc)) from exc
                if self.handoff is not None:
                    try:
                        sock = _listening_socket(host, port)
                    except OSError as exc:
                        raise ListenError.from_os_error(entry, exc) from exc
                    self._listeners.append(sock)
                    self._accepting.append(loop.create_task(self._accept(sock, implicit)))
                    name = sock.getsockname()
                    self.bound.append((name[0], name[1], implicit))
                    continue
                try:
                    server = await loop.create_server(
                        lambda implicit=implicit: Channel(lambda ch: self._session(ch, implicit)),
                        host or None,
                        port,
                        ssl=self.tls_context if implicit else None,
                        ssl_handshake_timeout=(
                            self.limits.tls_handshake_timeout if implicit else None
                        ),
                        backlog=1024,
                        reuse_address=True,
                    )
                except OSError as exc:
                    raise ListenError.from_os_error(entry, exc) from exc
                self._servers.append(server)
                for sock in server.sockets:
                    name = sock.getsockname()
                    self.bound.append((name[0], name[1], implicit))

    async def _session(self, channel: Channel, implicit: bool) -> None:
        if len(self.sessions) >= self.max_connections or self.closing:
            channel.write(Reply(421, "4.7.0", "Too many connections, try again later").render())
            channel.close()
            return
        client = channel.peer[0]
        held = self._per_client.get(client, 0)
        if self.max_connections_per_client and held >= self.max_connections_per_client:
            log.warning("%s: %d sessions open, refusing another", client, held)
            channel.write(
                Reply(421, "4.7.0", "Too many connections from your address, try again later").render()
            )
            channel.close()
            return
        session = SubmissionSession(
            channel, self.policy, self.limits, self.tls_context, implicit_tls=implicit, server=self
        )
        self.sessions.add(session)
        self._per_client[client] = held + 1
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            left = self._per_client.pop(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            if not self.sessions:
                self._drained.set()

    async def _accept(self, listener: socket.socket, implicit: bool) -> None:
        """Accept connections and give each to the next process in turn (this one too)."""
        assert self.handoff is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: do not spin
                log.warning("cannot accept a connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not self.handoff.hand_off(conn, implicit):
                self._adopt_soon(conn, implicit)

    def _adopt_soon(self, conn: socket.socket, implicit: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.adopt(conn, implicit))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def adopt(self, conn: socket.socket, implicit: bool) -> None:
        """Serve an accepted connection (implicit TLS: handshake first)."""
        conn.setblocking(False)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: Channel(lambda ch: self._session(ch, implicit)),
                conn,
                ssl=self.tls_context if implicit else None,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if implicit else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("connection dropped before the session: %s", exc)
            conn.close()

    def receive_from(self, receiver: HandoffReceiver) -> None:
        """Serve the connections the first worker hands over."""
        self._handoff_from = receiver
        receiver.start(self._adopt_soon)

    async def close(self, grace: float = 10.0) -> None:
        """Stop listening; idle sessions get 421, sessions in DATA may finish first."""
        self.closing = True
        for server in self._servers:
            server.close()
        for task in self._accepting:
            task.cancel()
        for listener in self._listeners:
            listener.close()
        if self._handoff_from is not None:
            self._handoff_from.stop()
        deadline = asyncio.get_running_loop().time() + grace
        for session in list(self.sessions):
            if not session.in_data:
                session.send(R.SHUTTING_DOWN)
                session.ch.close()
        if self.sessions:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._drained.wait(), max(0.0, deadline - asyncio.get_running_loop().time())
                )
        for session in list(self.sessions):
            session.ch.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
