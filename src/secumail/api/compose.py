"""Building an RFC 5322 message from the API's structured fields, refusing injections.

CR, LF or NUL in any header field value (or name) is refused with the field named: the
standard library would otherwise turn them into extra header lines (CVE-2024-6923 class).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

from secumail.api.models import MessageIn
from secumail.api.problems import ApiProblem
from secumail.mail.address import Address, AddressError, parse_address
from secumail.mail.headers import HeaderError, mailbox_of

_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,76}$")
# Fields the structured form sets itself, and trace/security fields nobody may set.
_RESERVED = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "received",
    "return-path",
    "dkim-signature",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "authentication-results",
    "sender",
}


def _clean(value: str, field: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ApiProblem(
            422, "header-injection", "CR, LF or NUL is not allowed in a header field", field=field
        )
    return value


def mailbox(value: str, field: str) -> Address:
    """An address in `Name <a@b>` or `a@b` form."""
    _clean(value, field)
    try:
        return mailbox_of(value)
    except HeaderError as exc:
        raise ApiProblem(422, "invalid-address", str(exc), field=field) from exc


def recipient(value: str, field: str) -> Address:
    _clean(value, field)
    try:
        return parse_address(value.strip(), utf8=not value.isascii())
    except AddressError as exc:
        raise ApiProblem(422, "invalid-address", str(exc), field=field) from exc


def compose(body: MessageIn, hostname: str) -> tuple[Address, list[Address], bytes]:
    """(envelope sender, envelope recipients, message bytes with CRLF)."""
    sender = mailbox(body.from_, "from")
    to = [recipient(a, f"to[{i}]") for i, a in enumerate(body.to)]
    cc = [recipient(a, f"cc[{i}]") for i, a in enumerate(body.cc)]
    bcc = [recipient(a, f"bcc[{i}]") for i, a in enumerate(body.bcc)]
    if not (to or cc or bcc):
        raise ApiProblem(422, "no-recipients", "give at least one of to, cc, bcc", field="to")
    if body.text is None and body.html is None:
        raise ApiProblem(422, "no-content", "give text, html or both", field="text")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _clean(body.from_, "from")
    if to:
        msg["To"] = ", ".join(str(a) for a in to)
    if cc:
        msg["Cc"] = ", ".join(str(a) for a in cc)
    if body.reply_to:
        msg["Reply-To"] = str(mailbox(body.reply_to, "reply_to"))
    msg["Subject"] = _clean(body.subject, "subject")
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=sender.domain)
    for name, value in body.headers.items():
        if not _FIELD_NAME.match(name):
            raise ApiProblem(
                422,
                "invalid-header",
                f"invalid header field name {name[:40]!r}",
                field=f"headers.{name}",
            )
        if name.lower() in _RESERVED:
            raise ApiProblem(
                422,
                "reserved-header",
                f"{name} is set by Secumail or the structured fields",
                field=f"headers.{name}",
            )
        msg[name] = _clean(value, f"headers.{name}")
    if body.text is not None:
        msg.set_content(body.text)
    if body.html is not None:
        if body.text is not None:
            msg.add_alternative(body.html, subtype="html")
        else:
            msg.set_content(body.html, subtype="html")
    for i, att in enumerate(body.attachments):
        _clean(att.filename, f"attachments[{i}].filename")
        try:
            data = base64.b64decode(att.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiProblem(
                422,
                "invalid-attachment",
                "content must be base64",
                field=f"attachments[{i}].content",
            ) from exc
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
    raw = msg.as_bytes()
    if re.search(rb"\r(?!\n)|(?<!\r)\n", raw):
        raise ApiProblem(422, "header-injection", "the message would contain a bare line ending")
    return sender, [*to, *cc, *bcc], raw


def raw_recipients(message: bytes) -> tuple[Address, list[Address], bytes]:
    """For `message/rfc822` bodies: envelope from From, recipients from To/Cc/Bcc; Bcc is
    removed before sending."""
    if re.search(rb"\r(?!\n)|(?<!\r)\n", message):
        message = re.sub(rb"\r?\n", b"\r\n", message)
    if b"\x00" in message:
        raise ApiProblem(422, "invalid-message", "NUL is not allowed in a message")
    parsed = message_from_bytes(message)
    froms = parsed.get_all("From") or []
    if len(froms) != 1:
        raise ApiProblem(
            422, "invalid-message", "the message must have exactly one From field", field="From"
        )
    sender = mailbox(str(froms[0]), "From")
    rcpts: list[Address] = []
    for name in ("To", "Cc", "Bcc"):
        for _display, addr in getaddresses([str(v) for v in parsed.get_all(name) or []]):
            if addr:
                rcpts.append(recipient(addr, name))
    if not rcpts:
        raise ApiProblem(
            422, "no-recipients", "the message names no recipient in To, Cc or Bcc", field="To"
        )
    # Drop Bcc fields (RFC 5322 §3.6.3) from the bytes, keeping everything else exact.
    head, sep, rest = message.partition(b"\r\n\r\n")
    lines, keep, skipping = head.split(b"\r\n"), [], False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                keep.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            keep.append(line)
    return sender, rcpts, b"\r\n".join(keep) + sep + rest
