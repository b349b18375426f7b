"""The mail that tells an account about an alert (a sender's TLS fell, a DNS record broke).

Pure: the caller picks the text in the account's language (`AlertText`); this builds the
message. The null envelope sender and `Auto-Submitted: auto-generated` (RFC 3834 §5) keep
it out of auto-reply and bounce loops. Every value that reaches a header line is made
header-safe here (decoded, no control characters: the CVE-2024-6923 class of bugs).
"""

from __future__ import annotations

import quopri
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, make_msgid

from secumail.mail.encoded_words import display_text


@dataclass(frozen=True, slots=True)
class AlertText:
    """What one alert says, in one language: a subject line and plain-text paragraphs."""

    subject: str
    body: str


def build_alert_mail(*, hostname: str, to: str, text: AlertText, now: float) -> bytes:
    """The complete message, CRLF line ends; UTF-8 only where the address needs it."""
    subject = display_text(text.subject)
    encoded_subject = subject if subject.isascii() else Header(subject, "utf-8").encode("\r\n")
    headers = [
        f"From: Secumail <mailer-daemon@{hostname}>",
        f"To: <{display_text(to)}>",
        f"Subject: {encoded_subject}",
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
    ]
    body = text.body.replace("\r\n", "\n").rstrip("\n") + "\n"
    qp = quopri.encodestring(body.encode("utf-8")).decode("ascii").replace("\n", "\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n" + qp).encode("ascii" if to.isascii() else "utf-8")
