"""The minimal RFC 3464 reader (mail/dsn_reader.py): what it takes from a DSN, and what it
refuses to take as one."""

from __future__ import annotations

from secumail.mail.dsn_reader import MAX_FIELD, parse_dsn

REPORT = (
    b"From: MAILER-DAEMON@mx.clinic.test\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.clinic.test\r\n\r\n"
    b"Final-Recipient: rfc822; dr@clinic.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Remote-MTA: dns; store.clinic.test\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n"
    b"Final-Recipient: rfc822; b@clinic.test\r\nAction: delayed\r\nStatus: 4.2.2 (full)\r\n\r\n"
    b"Final-Recipient: rfc822; c@clinic.test\r\nAction: failed\r\nStatus: bogus\r\n\r\n"
    b"--b--\r\n"
)


def test_rfc3464_fields_per_recipient() -> None:
    bounce = parse_dsn(REPORT)
    assert bounce is not None and bounce.format == "rfc3464"
    assert bounce.reporting_mta == "mx.clinic.test"
    first, second = bounce.recipients  # the one without a valid Status (§2.3.4) is left out
    assert (first.address, first.action, first.status) == ("dr@clinic.test", "failed", "5.1.1")
    assert first.diagnostic == "550 5.1.1 no such user" and first.remote_mta == "store.clinic.test"
    assert first.permanent
    assert (second.action, second.status, second.permanent) == ("delayed", "4.2.2", False)


def test_not_a_report_is_none() -> None:
    assert parse_dsn(b"Subject: out of office\r\n\r\nI am away.\r\n") is None
    assert parse_dsn(b"") is None
    assert parse_dsn(REPORT.replace(b"message/delivery-status", b"text/plain")) is None


def test_hostile_values_are_bounded_and_without_control_characters() -> None:
    long = b"x" * 5000
    raw = REPORT.replace(b"550 5.1.1 no such user", b"550 \x01\x7f" + long)
    first = parse_dsn(raw).recipients[0]  # type: ignore[union-attr]
    assert first.diagnostic is not None and len(first.diagnostic) <= MAX_FIELD
    assert not any(ord(c) < 32 or ord(c) == 127 for c in first.diagnostic)
