"""The delivery SMTP client: one connection to one MX over verified TLS (RFC 5321, RFC 3207).

`SmtpConnection.open()` runs the recipe connect → greeting → EHLO → STARTTLS (required)
→ TLS handshake with the route's TLS context → EHLO. It never sends a message without
TLS: a missing STARTTLS or a failed verification raises InsecureRoute. Transactions are
pipelined (RFC 2920) when the server offers it. Remote refusals carry their code,
enhanced code, command and line (SmtpReplyError).
"""

from __future__ import annotations

import _ssl
import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

from secumail.errors import ConnectError, InsecureRoute, SmtpReplyError
from secumail.mail.reply import Reply, default_enhanced, split_enhanced
from secumail.mail.smtp_data import unsafe_for_data

MAX_REPLY_LINES = 100
# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; longer lines are read (servers
# that exceed it a little still deliver, §4.5.3.1: "no limits … to the maximum extent
# possible"), up to this bound of what is kept in memory.
REPLY_LINE_LIMIT = 65536


@dataclass(frozen=True, slots=True)
class TlsDetails:
    version: str
    cipher: str
    cert_subject: str
    cert_fingerprint: str  # SHA-256 of the DER leaf certificate, hex
    cert_not_after: str


@dataclass(slots=True)
class TransactionResult:
    """Per-recipient replies (RCPT, or the final DATA reply when RCPT was accepted)."""

    recipients: dict[str, Reply] = field(default_factory=dict)
    data_reply: Reply | None = None


def _rfc8460_result(message: str) -> str:
    m = message.lower()
    if "expired" in m:
        return "certificate-expired"
    if "hostname mismatch" in m or "ip address mismatch" in m:
        return "certificate-host-mismatch"
    if "self-signed" in m or "self signed" in m or "local issuer" in m or "untrusted" in m:
        return "certificate-not-trusted"
    return "validation-failure"


def _buffered(reader: asyncio.StreamReader) -> int:
    """Octets received and not yet read. StreamReader has no public count, so this reads
    its buffer, and fails closed (every STARTTLS fails, loudly) should that ever change."""
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytes | bytearray):
        raise TypeError("asyncio.StreamReader has no _buffer: cannot check for injected data")
    return len(buffer)


def _subject(cert: dict[str, Any]) -> str:
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


class SmtpConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        mx: str,
        ip: str,
        command_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.mx = mx
        self.ip = ip
        self.command_timeout = command_timeout
        self.extensions: dict[str, str] = {}
        self.tls: TlsDetails | None = None
        self.messages_sent = 0
        self.broken = False
        self.authenticated_by = ""  # what authenticated the peer beyond PKIX (e.g. a TLSA record)

    # -- opening -------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        mx: str,
        ip: str,
        port: int,
        *,
        helo: str,
        tls_context: ssl.SSLContext,
        connect_timeout: float,
        command_timeout: float,
        tls_required: bool = True,
    ) -> SmtpConnection:
        """Connect and secure the session. `tls_required=False` (a relaxed route that an
        account explicitly allowed) carries on in plaintext when STARTTLS is not offered."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(ip, port, limit=REPLY_LINE_LIMIT)
        except TimeoutError as exc:
            raise ConnectError(f"{mx} [{ip}]: connection timed out") from exc
        except OSError as exc:
            raise ConnectError(f"{mx} [{ip}]: {exc.strerror or exc}") from exc
        conn = cls(reader, writer, mx=mx, ip=ip, command_timeout=command_timeout)
        try:
            await conn._handshake(helo, tls_context, tls_required)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _handshake(self, helo: str, tls_context: ssl.SSLContext, tls_required: bool) -> None:
        greeting = await self.read_reply("connect")
        if greeting.code != 220:
            raise self._refusal("connect", greeting, temporary_always=True)
        await self._ehlo(helo)
        if "STARTTLS" not in self.extensions and not tls_required:
            return
        if "STARTTLS" not in self.extensions:
            raise InsecureRoute(
                f"{self.mx} [{self.ip}]: does not offer STARTTLS",
                command="ehlo",
                rfc8460="starttls-not-supported",
            )
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            if reply.is_temporary:
                raise self._refusal("starttls", reply)
            raise InsecureRoute(
                f"{self.mx} [{self.ip}]: STARTTLS refused: {reply}",
                rfc8460="starttls-not-supported",
            )
        if _buffered(self.reader):
            # RFC 3207 §4.2 from the client's side (STARTTLS response injection): what the
            # server sent in clear after its 220 must never be read as a reply inside TLS,
            # where it would shift every later reply by one (RCPT's 250 taken for DATA's).
            self.broken = True
            raise ConnectError(
                f"{self.mx} [{self.ip}]: data sent in clear after the STARTTLS reply",
                command="starttls",
            )
        try:
            await self.writer.start_tls(
                tls_context, server_hostname=self.mx, ssl_handshake_timeout=self.command_timeout
            )
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or str(exc)
            raise InsecureRoute(
                f"{self.mx} [{self.ip}]: certificate not valid: {message}",
                command="tls",
                rfc8460=_rfc8460_result(message),
            ) from exc
        except ssl.SSLError as exc:
            raise InsecureRoute(
                f"{self.mx} [{self.ip}]: TLS handshake failed: {exc.reason or exc}",
                command="tls",
                rfc8460="validation-failure",
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectError(
                f"{self.mx} [{self.ip}]: connection lost during TLS handshake", command="tls"
            ) from exc
        obj = self.writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) or b""
        cert = obj.getpeercert() or {}
        cipher = obj.cipher()
        self.tls = TlsDetails(
            version=obj.version() or "",
            cipher=cipher[0] if cipher else "",
            cert_subject=_subject(cert),
            cert_fingerprint=hashlib.sha256(der).hexdigest(),
            cert_not_after=str(cert.get("notAfter", "")),
        )
        await self._ehlo(helo)

    async def _ehlo(self, helo: str) -> None:
        reply = await self.command(f"EHLO {helo}")
        if reply.code != 250:
            raise self._refusal("ehlo", reply)
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, params = line.strip().partition(" ")
            self.extensions[keyword.upper()] = params

    # -- I/O -----------------------------------------------------------------------
    async def read_reply(self, command: str) -> Reply:
        lines: list[str] = []
        code = 0
        try:
            async with asyncio.timeout(self.command_timeout):
                while True:
                    raw = await self._reply_line(command)
                    if not raw:
                        raise ConnectError(
                            f"{self.mx} [{self.ip}]: connection closed", command=command
                        )
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if len(text) < 3 or not text[:3].isdigit():
                        raise ConnectError(
                            f"{self.mx} [{self.ip}]: malformed reply {text[:80]!r}", command=command
                        )
                    code = int(text[:3])
                    lines.append(text[4:])
                    if text[3:4] != "-" or len(lines) >= MAX_REPLY_LINES:
                        break
        except TimeoutError as exc:
            self.broken = True
            raise ConnectError(
                f"{self.mx} [{self.ip}]: timeout waiting for reply to {command}", command=command
            ) from exc
        except (OSError, ValueError) as exc:
            self.broken = True
            raise ConnectError(f"{self.mx} [{self.ip}]: {exc}", command=command) from exc
        enhanced, first = split_enhanced(code, lines[0])
        rest = [split_enhanced(code, line)[1] if enhanced else line for line in lines[1:]]
        return Reply(code, enhanced or default_enhanced(code), "\n".join([first, *rest]))

    async def _reply_line(self, command: str) -> bytes:
        """One reply line with its LF (without one at the end of the stream); a line past
        REPLY_LINE_LIMIT is a ConnectError that says so (never asyncio's "Separator is
        not found, and chunk exceed the limit")."""
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            self.broken = True
            answering = "as its greeting" if command == "connect" else f"to {command.upper()}"
            raise ConnectError(
                f"{self.mx} [{self.ip}] sent a reply line longer than {REPLY_LINE_LIMIT} octets "
                f"{answering} (RFC 5321 §4.5.3.1.5 allows 512): not a valid SMTP reply",
                command=command,
            ) from exc

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def command(self, line: str) -> Reply:
        self.write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply(line.split(" ", 1)[0].lower())

    def _refusal(
        self, command: str, reply: Reply, *, temporary_always: bool = False
    ) -> SmtpReplyError:
        return SmtpReplyError(
            f"{self.mx} [{self.ip}]: {command} refused: {reply}",
            permanent=reply.is_permanent and not temporary_always,
            code=reply.code,
            enhanced=reply.enhanced,
            command=command,
            line=str(reply),
        )

    # -- transactions --------------------------------------------------------------
    async def send(
        self,
        mail_from: str,
        recipients: list[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        eightbit: bool = False,
        requiretls: bool = False,
    ) -> TransactionResult:
        """One transaction; per-recipient outcome. Raises only when the connection fails."""
        unsafe = unsafe_for_data(data)
        if unsafe is not None:
            # Nothing is sent: a message that could end early at the receiver is refused
            # here, permanently (RFC 5321 §4.1.4's 554 family; X.6.0 media error).
            reply = Reply(554, "5.6.0", f"message holds {unsafe}: not sent (smuggling guard)")
            return TransactionResult({r: reply for r in recipients})
        params = " REQUIRETLS" if requiretls else ""  # RFC 8689 §4: passed on
        if "SIZE" in self.extensions:
            params += f" SIZE={len(data)}"
        if smtputf8:
            if "SMTPUTF8" not in self.extensions:
                reply = Reply(553, "5.6.7", "recipient's server does not support SMTPUTF8")
                return TransactionResult({r: reply for r in recipients})
            params += " SMTPUTF8"
        if eightbit and "8BITMIME" in self.extensions:
            params += " BODY=8BITMIME"
        result = TransactionResult()
        mail = f"MAIL FROM:<{mail_from}>{params}"
        rcpts = [f"RCPT TO:<{r}>" for r in recipients]
        if "PIPELINING" in self.extensions:
            self.write("".join(f"{c}\r\n" for c in [mail, *rcpts, "DATA"]).encode("utf-8"))
            mail_reply = await self.read_reply("mail")
            rcpt_replies = [await self.read_reply("rcpt") for _ in rcpts]
            data_reply = await self.read_reply("data")
        else:
            mail_reply = await self.command(mail)
            rcpt_replies = []
            data_reply = None
            if mail_reply.code == 250:
                for c in rcpts:
                    rcpt_replies.append(await self.command(c))
                if any(r.code in (250, 251) for r in rcpt_replies):
                    data_reply = await self.command("DATA")
        if mail_reply.code != 250:
            result.recipients = {r: mail_reply for r in recipients}
            await self._reset_after_failure(data_reply)
            return result
        accepted = []
        for address, reply in zip(recipients, rcpt_replies, strict=True):
            if reply.code in (250, 251):
                accepted.append(address)
            else:
                result.recipients[address] = reply
        if not accepted or data_reply is None or data_reply.code != 354:
            failed = data_reply or Reply(503, "5.5.1", "no recipient accepted")
            for address in accepted:
                result.recipients[address] = failed
            await self._reset_after_failure(data_reply)
            return result
        self.write(dot_stuff(data) + b".\r\n")
        final = await self.read_reply("message")
        result.data_reply = final
        for address in accepted:
            result.recipients[address] = final
        self.messages_sent += 1
        return result

    async def _reset_after_failure(self, data_reply: Reply | None) -> None:
        if data_reply is not None and data_reply.code == 354:
            # A server that said 354 with no recipient: end the empty data (RFC 2920 §3.1).
            self.write(b".\r\n")
            await self.read_reply("message")
        reply = await self.command("RSET")
        if reply.code != 250:
            self.broken = True

    def peer_chain(self) -> list[bytes]:
        """The certificates the server presented, leaf first, DER (for DANE, RFC 7672).

        Python 3.11 exposes the unverified chain only on the private `_sslobj`
        (public from 3.13 as `get_unverified_chain`); without it, just the leaf."""
        obj = self.writer.get_extra_info("ssl_object")
        if obj is None:
            return []
        inner = getattr(obj, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None) or getattr(
            obj, "get_unverified_chain", None
        )
        if getter is not None:
            chain = getter() or []
            return [c.public_bytes(_ssl.ENCODING_DER) for c in chain]
        leaf = obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []

    async def quit(self) -> None:
        try:
            self.write(b"QUIT\r\n")
            async with asyncio.timeout(2):
                await self.reader.read(1024)
        except (OSError, TimeoutError, ConnectError):
            pass
        self.abort()

    def abort(self) -> None:
        self.broken = True
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    @property
    def usable(self) -> bool:
        return not self.broken and not self.writer.transport.is_closing()


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: double a leading period on every line; ensure a final CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")
