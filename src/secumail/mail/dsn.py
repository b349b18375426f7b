"""Delivery status notifications (RFC 3464 in an RFC 6522 multipart/report).

The human part is in the account's language; the machine part lists each recipient
with its action and enhanced status code. The third part carries only the original's
identifying header fields (From, Message-ID, and Subject when the account stores it):
the content itself is never copied into a notice.
"""

from __future__ import annotations

import quopri
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, make_msgid

from secumail.mail.encoded_words import display_text
from secumail.mail.notice_texts import (
    INTRO,
    LABELS,
    NO_SUBJECT,
    REASONS,
    SUBJECTS,
    locale_or_default,
)
from secumail.mail.status import RecipientStatus


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    address: str
    status: RecipientStatus
    enhanced: str  # e.g. "5.7.10"
    diagnostic: str  # the remote reply or our reason
    remote_mta: str | None = None
    details: tuple[str, ...] = ()  # e.g. per-MX reasons


@dataclass(frozen=True, slots=True)
class DsnRequest:
    reporting_mta: str
    sender: str  # the original envelope sender, who gets this notice
    original_id: str  # Secumail's message id
    arrival: float
    recipients: tuple[DsnRecipient, ...]
    locale: str = "en"
    kind: str = "failed"  # or "delayed", or "bounced" (failed, reported later by the recipient's side)
    original_from: str | None = None
    original_message_id: str | None = None
    original_subject: str | None = None
    retry_until: float | None = None


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _clean(text: str) -> str:
    # Header-safe: decoded first, then no CR, LF, NUL or other control character and no
    # encoded word is left to reach a header line (CVE-2024-6923 class of bugs).
    return display_text(text)


def _human(req: DsnRequest, lang: str) -> str:
    labels = LABELS[lang]
    ref = f" ({_clean(req.original_subject)})" if req.original_subject else ""
    until = _date(req.retry_until) if req.retry_until else ""
    lines = [INTRO[lang][req.kind].format(ref=ref, until=until), ""]
    for r in req.recipients:
        lines.append(f"{labels['recipient']}: {r.address}")
        lines.append(REASONS[lang][r.status])
        lines.append(f"{labels['reason']}: {_clean(r.diagnostic)}")
        for d in r.details:
            lines.append(f"  - {_clean(d)}")
        lines.append("")
    lines.append(f"{labels['message_id']}: {req.original_id}")
    if req.original_message_id:
        lines.append(f"Message-ID: {_clean(req.original_message_id)}")
    return "\r\n".join(lines) + "\r\n"


def _status_part(req: DsnRequest) -> str:
    per_message = [
        f"Reporting-MTA: dns; {req.reporting_mta}",
        f"Arrival-Date: {_date(req.arrival)}",
    ]
    blocks = ["\r\n".join(per_message)]
    for r in req.recipients:
        action = "delayed" if req.kind == "delayed" else "failed"
        # RFC 6533 §3: a UTF-8 address is of type "utf-8" in a global status part.
        addr_type = "utf-8" if not r.address.isascii() else "rfc822"
        fields = [
            f"Final-Recipient: {addr_type}; {_xtext(r.address)}",
            f"Action: {action}",
            f"Status: {r.enhanced}",
        ]
        if r.remote_mta:
            fields.append(f"Remote-MTA: dns; {r.remote_mta}")
        fields.append(f"Diagnostic-Code: smtp; {_xtext(_clean(r.diagnostic))[:900]}")
        if req.kind == "delayed" and req.retry_until:
            fields.append(f"Will-Retry-Until: {_date(req.retry_until)}")
        blocks.append("\r\n".join(fields))
    return "\r\n\r\n".join(blocks) + "\r\n"


def needs_utf8(req: DsnRequest) -> bool:
    """A notice to a UTF-8 sender address must travel with SMTPUTF8 (RFC 6531)."""
    return not req.sender.isascii()


def _xtext(text: str) -> str:
    """RFC 6533 §3 utf-8-addr-xtext: non-ASCII as \\x{HEX}, so the status part stays ASCII."""
    return "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in text)


def build_dsn(req: DsnRequest, now: float) -> bytes:
    """The complete notice with CRLF line ends: 7-bit clean unless the sender's own
    address is UTF-8 (`needs_utf8`), in which case only its To: field is UTF-8."""
    utf8 = needs_utf8(req)
    lang = locale_or_default(req.locale)
    boundary = "secumail-" + secrets.token_hex(12)
    status_type = "delivery-status"
    headers_type = "text/rfc822-headers"
    subject_ref = _clean(req.original_subject) if req.original_subject else NO_SUBJECT[lang]
    subject = SUBJECTS[lang][req.kind].format(subject=subject_ref)
    headers = [
        f"From: Mail Delivery System <mailer-daemon@{req.reporting_mta}>",
        f"To: <{req.sender}>",
        f"Subject: {_encode_header(subject)}",
        f"Date: {_date(now)}",
        f"Message-ID: {make_msgid(domain=req.reporting_mta)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={status_type}; boundary="{boundary}"',
    ]
    human = quopri.encodestring(_human(req, lang).encode("utf-8")).decode("ascii")
    original = []
    if req.original_from:
        original.append(f"From: {_encode_header(_clean(req.original_from))}")
    if req.original_message_id:
        # A msg-id is never an encoded word; a UTF-8 one (RFC 6532) is shown as xtext.
        original.append(f"Message-ID: {_xtext(_clean(req.original_message_id))}")
    if req.original_subject:
        original.append(f"Subject: {_encode_header(_clean(req.original_subject))}")
    parts = [
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + human.replace("\n", "\r\n").replace("\r\r\n", "\r\n"),
        f"Content-Type: message/{status_type}\r\n\r\n" + _status_part(req),
    ]
    if original:
        parts.append(f"Content-Type: {headers_type}\r\n\r\n" + "\r\n".join(original) + "\r\n")
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8" if utf8 else "ascii")


def _encode_header(text: str) -> str:
    return Header(text, "utf-8").encode(linesep="\r\n") if not text.isascii() else text
