"""Reading a TLS report mail (RFC 8460 §5.3) as the report's recipient.

A reporting MTA sends its aggregate report (§4.4 JSON) as an attachment of type
``application/tlsrpt+gzip`` (the gzip of the JSON, §5.1) or ``application/tlsrpt+json``,
inside a ``multipart/report; report-type="tlsrpt"``. Lenient about the container (any
multipart, or the report as the whole body), strict about the content: exactly the first
part of one of those two types is read, gzip is undone incrementally with a hard cap on
the JSON's size (a small attachment may inflate a thousandfold), and the JSON must be an
RFC 8460 report (`mail.tlsrpt.parse_report`, which bounds nesting).

Sans-I/O and in memory: bytes in, a `TlsReport` or a `TlsReportMailError` out, whose
``reason`` names why (``not_a_report``, ``oversized``, ``unreadable``).
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage, Message

from secumail.mail.tlsrpt import (
    MAX_REPORT_JSON,
    MEDIA_TYPE_GZIP,
    MEDIA_TYPE_JSON,
    ReportTooLarge,
    TlsReport,
    TlsRptError,
    gunzip_report,
    parse_report,
)

MAX_PARTS = 50  # MIME parts looked at before giving up


class TlsReportMailError(ValueError):
    """A mail that carries no readable report; ``reason`` is a short counter name."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def read_report_mail(message: bytes, *, max_json: int = MAX_REPORT_JSON) -> TlsReport:
    """The report carried by ``message`` (a whole RFC 5322 mail); raises `TlsReportMailError`."""
    try:
        mail = message_from_bytes(message, policy=policy.default)
    except Exception as exc:  # the email package on hostile input: unreadable, not a crash
        raise TlsReportMailError("unreadable", f"not a mail: {type(exc).__name__}") from exc
    part = _report_part(mail)
    if part is None:
        raise TlsReportMailError("not_a_report", "no application/tlsrpt+gzip or +json part")
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:  # a broken transfer encoding
        raise TlsReportMailError("unreadable", "the report part cannot be decoded") from exc
    if not isinstance(payload, bytes):
        raise TlsReportMailError("unreadable", "the report part has no body")
    try:
        if part.get_content_type() == MEDIA_TYPE_GZIP:
            data = gunzip_report(payload, max_json)  # §5.1: the gzip of the JSON
        elif payload[:2] == b"\x1f\x8b":
            raise TlsRptError("gzip data labelled application/tlsrpt+json")
        else:
            data = payload
        return parse_report(data, max_size=max_json)
    except ReportTooLarge as exc:
        raise TlsReportMailError("oversized", str(exc)) from exc
    except TlsRptError as exc:
        raise TlsReportMailError("unreadable", str(exc)) from exc


def _report_part(mail: Message) -> EmailMessage | None:
    """The first part of a TLSRPT media type (§6.4, §6.5), in at most `MAX_PARTS` parts."""
    for seen, part in enumerate(mail.walk()):
        if seen >= MAX_PARTS:
            return None
        if part.get_content_type() in (MEDIA_TYPE_GZIP, MEDIA_TYPE_JSON):
            return part if isinstance(part, EmailMessage) else None
    return None
