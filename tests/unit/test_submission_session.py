"""The submission SMTP session (net/smtp_server.py `SubmissionSession`) over an in-memory
connection: the real `Channel` on a fake transport that records what is written, a fake
policy standing in for the store and the pipeline. No sockets, no TLS handshake (STARTTLS
is stood in for by the channel; the real one is covered end to end)."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from secumail.mail.address import Address
from secumail.mail.reply import Reply
from secumail.mail.smtp_data import BareNewline
from secumail.net.channel import Channel
from secumail.net.smtp_server import (
    AuthOutcome,
    Envelope,
    Principal,
    SessionLimits,
    SubmissionSession,
)

HOST = "gw.test"
CLIENT_IP = "192.0.2.7"
USER, PASSWORD = "alice", "s3cret"
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


# -- the fakes ---------------------------------------------------------------------


class FakeSslObject:
    def version(self) -> str:
        return "TLSv1.3"

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256)

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return None  # no client certificate (none asked for)


class FakeTransport:
    """What the channel writes, kept per write (one write: one send to the client)."""

    def __init__(self, tls: bool) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra: dict[str, Any] = {
            "peername": (CLIENT_IP, 40000),
            "ssl_object": FakeSslObject() if tls else None,
        }

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class StartTlsChannel(Channel):
    """The real channel, with the handshake stood in for: the transport turns TLS."""

    handshakes = 0

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> None:
        assert self.transport is not None
        self.flush()
        self.handshakes += 1
        self.transport.extra["ssl_object"] = FakeSslObject()  # type: ignore[attr-defined]


@dataclass
class FakePolicy:
    """The store and pipeline's answers: one account, every sender allowed."""

    authenticated_relay = True
    refused_recipients: set[str] = field(default_factory=set)
    busy: Reply | None = None
    logins: list[tuple[str, str]] = field(default_factory=list)
    accepted: list[tuple[Principal, Envelope, bytes]] = field(default_factory=list)

    async def authenticate(
        self, username: str, password: str, client_ip: str
    ) -> tuple[AuthOutcome, Principal | None]:
        self.logins.append((username, client_ip))
        if (username, password) == (USER, PASSWORD):
            return AuthOutcome.OK, Principal("acct-1", "cred-1", username)
        return AuthOutcome.FAILED, None

    async def check_sender(self, principal: Principal, address: Address | None) -> Reply | None:
        return None

    async def check_recipient(self, principal: Principal, address: Address) -> Reply | None:
        if str(address) in self.refused_recipients:
            return Reply(550, "5.7.1", "Recipient not allowed")
        return None

    async def admission(self) -> Reply | None:
        return self.busy

    async def accept(self, principal: Principal, envelope: Envelope, message: bytes) -> Reply:
        self.accepted.append((principal, envelope, message))
        return Reply(250, "2.0.0", f"Queued as Q{len(self.accepted)}")


class Conversation:
    """A client talking to one session: `send` feeds octets and returns the reply lines
    written until the session waits for input again."""

    def __init__(
        self, policy: FakePolicy | None = None, *, implicit_tls: bool = False, **limits: Any
    ) -> None:
        self.policy = policy or FakePolicy()
        settings: dict[str, Any] = {
            "hostname": HOST,
            "max_message_size": 10_000,
            "max_recipients": 3,
            "idle_timeout": 60.0,
            "data_timeout": 60.0,
            "max_errors": 5,
        }
        self.limits = SessionLimits(**(settings | limits))
        self.implicit_tls = implicit_tls
        self.transport = FakeTransport(tls=implicit_tls)
        self.channel = StartTlsChannel(self._run)
        self.server = SimpleNamespace(closing=False)
        self.session: SubmissionSession | None = None
        self._seen = 0

    async def _run(self, channel: Channel) -> None:
        self.session = SubmissionSession(
            channel,
            self.policy,
            self.limits,
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
            implicit_tls=self.implicit_tls,
            server=self.server,  # type: ignore[arg-type]  # only `closing` is read
        )
        await self.session.run()

    async def open(self) -> list[str]:
        self.channel.connection_made(self.transport)  # type: ignore[arg-type]
        return await self._replies()

    async def send(self, data: bytes) -> list[str]:
        self.channel.data_received(data)
        return await self._replies()

    async def _replies(self) -> list[str]:
        """Let the session run until it waits for input (or has ended)."""
        task = self.channel.task
        assert task is not None
        for _ in range(10_000):
            waiter = self.channel._waiter
            if task.done() or (waiter is not None and not waiter.done()):
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the session neither waits for input nor ends")
        if task.done():
            task.result()  # raise what the session raised
        new = b"".join(self.transport.writes[self._seen :])
        self._seen = len(self.transport.writes)
        return new.decode().splitlines()

    @property
    def ended(self) -> bool:
        return self.channel.task is not None and self.channel.task.done() and self.transport.closed

    async def ready(self) -> None:
        """Greeted, EHLO'd and (with TLS) authenticated."""
        await self.open()
        await self.send(b"EHLO client.test\r\n")
        if self.implicit_tls:
            assert await self.send(f"AUTH PLAIN {PLAIN}\r\n".encode()) == [
                "235 2.7.0 Authentication successful"
            ]


def talk(coro_fn: Any) -> None:
    asyncio.run(coro_fn())


# -- greeting, EHLO, STARTTLS ------------------------------------------------------


def test_greeting_names_the_host() -> None:
    async def main() -> None:
        c = Conversation()
        assert await c.open() == [f"220 {HOST} ESMTP Secumail"]

    talk(main)


def test_ehlo_in_plaintext_offers_starttls_and_no_auth() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        assert await c.send(b"EHLO client.test\r\n") == [
            f"250-{HOST} greets client.test",
            "250-PIPELINING",
            "250-SIZE 10000",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-SMTPUTF8",
            "250 STARTTLS",
        ]

    talk(main)


def test_ehlo_inside_tls_offers_auth_and_requiretls_not_starttls() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.open()
        lines = await c.send(b"EHLO client.test\r\n")
        assert lines[-2:] == ["250-AUTH PLAIN LOGIN", "250 REQUIRETLS"]
        assert not any("STARTTLS" in line for line in lines)

    talk(main)


def test_starttls_drops_pipelined_input_and_asks_for_ehlo_again() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        # RFC 3207 §4.2: the MAIL sent in clear behind STARTTLS must not be acted on.
        assert await c.send(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\n") == [
            "220 2.0.0 Ready to start TLS"
        ]
        assert c.channel.handshakes == 1
        assert await c.send(b"MAIL FROM:<a@b.test>\r\n") == ["503 5.5.1 Send EHLO first"]
        lines = await c.send(b"EHLO client.test\r\n")
        assert "250-AUTH PLAIN LOGIN" in lines and not any("STARTTLS" in x for x in lines)
        assert await c.send(b"STARTTLS\r\n") == ["503 5.5.1 Already in TLS"]

    talk(main)


def test_starttls_needs_ehlo_first() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        assert await c.send(b"STARTTLS\r\n") == ["503 5.5.1 Send EHLO first"]
        assert c.channel.handshakes == 0

    talk(main)


# -- TLS and AUTH before MAIL ------------------------------------------------------


def test_no_auth_and_no_mail_outside_tls() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        assert await c.send(f"AUTH PLAIN {PLAIN}\r\n".encode()) == [
            "538 5.7.11 Encryption required for requested authentication mechanism"
        ]
        assert await c.send(b"MAIL FROM:<a@b.test>\r\n") == [
            "530 5.7.0 Must issue a STARTTLS command first"
        ]
        assert c.policy.logins == [], "no password looked at outside TLS"

    talk(main)


def test_mail_needs_auth() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        assert await c.send(b"MAIL FROM:<a@b.test>\r\n") == ["530 5.7.0 Authentication required"]

    talk(main)


def test_auth_plain_success_and_failure() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        wrong = base64.b64encode(f"\0{USER}\0nope".encode()).decode()
        assert await c.send(f"AUTH PLAIN {wrong}\r\n".encode()) == [
            "535 5.7.8 Authentication credentials invalid"
        ]
        assert await c.send(f"AUTH PLAIN {PLAIN}\r\n".encode()) == [
            "235 2.7.0 Authentication successful"
        ]
        assert c.policy.logins == [(USER, CLIENT_IP), (USER, CLIENT_IP)]
        assert await c.send(f"AUTH PLAIN {PLAIN}\r\n".encode()) == [
            "503 5.5.1 Bad sequence of commands"
        ]

    talk(main)


def test_auth_login_asks_for_username_then_password() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        assert await c.send(b"AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]  # "Username:"
        assert await c.send(base64.b64encode(USER.encode()) + b"\r\n") == ["334 UGFzc3dvcmQ6"]
        assert await c.send(base64.b64encode(PASSWORD.encode()) + b"\r\n") == [
            "235 2.7.0 Authentication successful"
        ]

    talk(main)


# -- a transaction ------------------------------------------------------------------


def test_pipelined_transaction_is_answered_in_one_send() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        writes = len(c.transport.writes)
        lines = await c.send(
            b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
        )
        assert lines == [
            "250 2.1.0 Sender ok",
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
        assert len(c.transport.writes) == writes + 1, "RFC 2920: one send for the group"
        assert await c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n") == ["250 2.0.0 Queued as Q1"]
        principal, envelope, message = c.policy.accepted[0]
        assert principal.username == USER
        assert str(envelope.mail_from) == "jan@zorg.test"
        assert [str(a) for a in envelope.rcpt_to] == ["a@x.test", "b@x.test"]
        assert (envelope.client_ip, envelope.helo) == (CLIENT_IP, "client.test")
        assert (envelope.tls_version, envelope.tls_cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        assert message == b"Subject: hi\r\n\r\nbody\r\n"

    talk(main)


def test_data_end_undoes_dot_stuffing_and_pipelined_quit_follows() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        lines = await c.send(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\nend\r\n.\r\nQUIT\r\n")
        assert lines == ["250 2.0.0 Queued as Q1", "221 2.0.0 Bye"]
        assert c.policy.accepted[0][2] == b"Subject: dots\r\n\r\n.leading dot\r\n..\r\nend\r\n"
        assert c.ended

    talk(main)


def test_recipient_limit_and_duplicates() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True, max_recipients=2)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\n")
        assert await c.send(b"RCPT TO:<a@x.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n") == [
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
        ]
        assert await c.send(b"RCPT TO:<c@x.test>\r\n") == ["452 4.5.3 Too many recipients"]
        await c.send(b"DATA\r\n")
        await c.send(b"x\r\n.\r\n")
        assert [str(a) for a in c.policy.accepted[0][1].rcpt_to] == ["a@x.test", "b@x.test"]

    talk(main)


def test_refused_recipient_and_data_without_recipients() -> None:
    async def main() -> None:
        c = Conversation(FakePolicy(refused_recipients={"no@x.test"}), implicit_tls=True)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\n")
        assert await c.send(b"RCPT TO:<no@x.test>\r\n") == ["550 5.7.1 Recipient not allowed"]
        assert await c.send(b"DATA\r\n") == ["554 5.5.1 No valid recipients"]

    talk(main)


def test_declared_size_over_the_limit_is_refused_at_mail() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        assert await c.send(b"MAIL FROM:<jan@zorg.test> SIZE=10001\r\n") == [
            "552 5.3.4 Message size exceeds fixed maximum message size"
        ]
        assert await c.send(b"MAIL FROM:<jan@zorg.test> SIZE=10000\r\n") == ["250 2.1.0 Sender ok"]

    talk(main)


def test_busy_gateway_refuses_mail_and_pipelined_commands_are_not_errors() -> None:
    async def main() -> None:
        busy = Reply(451, "4.3.2", "System busy: queue full, try again later")
        c = Conversation(FakePolicy(busy=busy), implicit_tls=True, max_errors=2)
        await c.ready()
        assert await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n") == [
            "451 4.3.2 System busy: queue full, try again later",
            "503 5.5.1 Need MAIL before RCPT",
            "503 5.5.1 Need MAIL before DATA",
        ]
        assert not c.ended, "two 503s after our own 451 count as no client errors"

    talk(main)


# -- line endings and what DATA refuses ------------------------------------------------


def test_bare_lf_in_data_is_taken_as_crlf_by_default() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        # Only CRLF "." CRLF ends the data: a "." after a bare LF is text.
        assert await c.send(b"Subject: lf\n\nbody\n.\r\n") == []
        assert await c.send(b"more\r\n.\r\n") == ["250 2.0.0 Queued as Q1"]
        assert c.policy.accepted[0][2] == b"Subject: lf\r\n\r\nbody\r\n.\r\nmore\r\n"

    talk(main)


def test_bare_lf_in_data_is_refused_and_closes_when_rejecting() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True, bare_newline=BareNewline.REJECT)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        assert await c.send(b"Subject: lf\nbody\r\n.\r\n") == [
            "554 5.5.2 Bare CR or LF in message data refused (RFC 5321 §2.3.8); closing connection"
        ]
        assert c.ended
        assert c.policy.accepted == []

    talk(main)


def test_bare_cr_in_data_is_refused_even_when_normalizing() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        assert await c.send(b"Subject: cr\rbody\r\n.\r\n") == [
            "554 5.5.2 Bare CR in message data refused (RFC 5321 §2.3.8); closing connection"
        ]
        assert c.ended

    talk(main)


def test_bare_lf_ending_a_command_line() -> None:
    async def main() -> None:
        normalizing = Conversation()
        await normalizing.open()
        assert (await normalizing.send(b"EHLO client.test\n"))[0] == f"250-{HOST} greets client.test"
        rejecting = Conversation(bare_newline=BareNewline.REJECT)
        await rejecting.open()
        assert await rejecting.send(b"EHLO client.test\n") == [
            "500 5.5.2 Command lines must end with CRLF"
        ]

    talk(main)


def test_nul_in_data_is_refused() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        assert await c.send(b"Subject: nul\r\n\r\na\x00b\r\n.\r\n") == [
            "554 5.6.0 NUL character in message data refused (RFC 5322 §2.3)"
        ]
        assert c.policy.accepted == []
        assert not c.ended, "the session goes on after the refused message"
        assert await c.send(b"NOOP\r\n") == ["250 2.0.0 Ok"]

    talk(main)


def test_message_over_the_size_limit() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True, max_message_size=100)
        await c.ready()
        await c.send(b"MAIL FROM:<jan@zorg.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
        assert await c.send(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n") == [
            "552 5.3.4 Message size exceeds fixed maximum message size"
        ]
        assert c.policy.accepted == []

    talk(main)


# -- errors, QUIT -------------------------------------------------------------------


def test_every_error_carries_an_enhanced_status_code() -> None:
    async def main() -> None:
        c = Conversation(implicit_tls=True, max_errors=100)
        await c.open()
        errors = []
        for line in (
            b"BOGUS\r\n",
            b"EHLO\r\n",
            b"RCPT TO:<a@x.test>\r\n",
            b"MAIL FROM:<a@x.test>\r\n",  # before EHLO
            b"EHLO client.test\r\n",
            b"AUTH CRAM-MD5\r\n",
            b"AUTH PLAIN !!!\r\n",
            b"MAIL FROM:<a@x.test>\r\n",  # before AUTH
            f"AUTH PLAIN {PLAIN}\r\n".encode(),
            b"MAIL FROM:<not an address>\r\n",
            b"MAIL FROM:<a@x.test> FOO=1\r\n",
            b"DATA\r\n",
            b"MAIL FROM:<a@x.test>\r\n",
            b"MAIL FROM:<a@x.test>\r\n",  # nested
            b"RCPT TO:<>\r\n",
            b"DATA now\r\n",
            b"X" * 600 + b"\r\n",
        ):
            errors += [x for x in await c.send(line) if x[0] in "45"]
        assert errors == [
            "500 5.5.2 Command not recognised",
            "501 5.5.4 EHLO requires a domain or address literal",
            "503 5.5.1 Need MAIL before RCPT",
            "503 5.5.1 Send EHLO first",
            "504 5.5.4 Unrecognised authentication mechanism",
            "501 5.5.2 Cannot decode base64 response",
            "530 5.7.0 Authentication required",
            "501 5.1.7 invalid address 'not an address'",
            "555 5.5.4 Unsupported MAIL parameter FOO",
            "503 5.5.1 Need MAIL before DATA",
            "503 5.5.1 Nested MAIL command",
            "501 5.1.3 Null address not allowed here",
            "501 5.5.4 DATA takes no parameters",
            "500 5.5.2 Line too long (RFC 5321 §4.5.3.1.4: 512 octets)",
        ]
        for reply in errors:
            assert ENHANCED.match(reply), reply

    talk(main)


def test_too_many_errors_close_the_connection() -> None:
    async def main() -> None:
        c = Conversation(max_errors=3)
        await c.open()
        assert await c.send(b"BOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n") == [
            "500 5.5.2 Command not recognised",
            "500 5.5.2 Command not recognised",
            "500 5.5.2 Command not recognised",
            "421 4.7.0 Too many errors, closing connection",
        ]
        assert c.ended

    talk(main)


def test_keepalive_commands_are_limited() -> None:
    async def main() -> None:
        c = Conversation(max_junk_commands=2)
        await c.open()
        assert await c.send(b"NOOP\r\nRSET\r\nNOOP\r\n") == [
            "250 2.0.0 Ok",
            "250 2.0.0 Ok",
            "421 4.7.0 Too many commands without a message; closing",
        ]
        assert c.ended

    talk(main)


def test_quit_says_bye_and_closes() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        assert await c.send(b"QUIT\r\n") == ["221 2.0.0 Bye"]
        assert c.ended

    talk(main)


def test_client_gone_ends_the_session_quietly() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        c.channel.eof_received()
        assert await c._replies() == []
        assert c.ended

    talk(main)


def test_shutting_down_server_says_421_at_the_next_command() -> None:
    async def main() -> None:
        c = Conversation()
        await c.open()
        await c.send(b"EHLO client.test\r\n")
        c.server.closing = True
        lines = await c.send(b"NOOP\r\n")
        assert lines[0] == "250 2.0.0 Ok"
        assert lines[1].startswith("421 4.")
        assert c.ended

    talk(main)
