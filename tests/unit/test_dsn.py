"""Delivery status notifications: RFC 3464 inside an RFC 6522 multipart/report.

Read back with the standard library's `email` parser, as a sender's mail program would.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime

import pytest

from secumail.mail.dsn import DsnRecipient, DsnRequest, build_dsn
from secumail.mail.headers import parse_header_section
from secumail.mail.status import RecipientStatus

NOW = 1_700_000_000.0
BOB = DsnRecipient(
    "bob@example.test",
    RecipientStatus.REFUSED_INSECURE,
    "5.7.10",
    "mx.example.test offers no STARTTLS",
    remote_mta="mx.example.test",
)


def request(**overrides: object) -> DsnRequest:
    fields: dict = {
        "reporting_mta": "gw.secumail.test",
        "sender": "alice@good.test",
        "original_id": "01HABCDEFGHJKMNP",
        "arrival": NOW - 60,
        "recipients": (BOB,),
        "original_from": "Alice <alice@good.test>",
        "original_message_id": "<m1@good.test>",
        "original_subject": "Lab results",
    }
    fields.update(overrides)
    return DsnRequest(**fields)


def parse(out: bytes) -> EmailMessage:
    return email.message_from_bytes(out, policy=email.policy.default)


def parts(msg: EmailMessage) -> list[Message]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    return payload


def status_blocks(msg: EmailMessage) -> list[Message]:
    """The per-message block, then one block per recipient (RFC 3464 §2.1)."""
    (report,) = [p for p in parts(msg) if p.get_content_type().endswith("delivery-status")]
    blocks = report.get_payload()
    assert isinstance(blocks, list)
    return blocks


def human_text(msg: EmailMessage) -> str:
    first = parts(msg)[0]
    assert first.get_content_type() == "text/plain"
    return first.get_content()


def assert_crlf_only(out: bytes) -> None:
    # RFC 5322 §2.3: CR and LF only occur together as CRLF.
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", out) is None, "bare CR or LF in notice"


# --- structure ------------------------------------------------------------------------


def test_multipart_report_structure() -> None:
    msg = parse(build_dsn(request(), NOW))
    # RFC 6522 §3: multipart/report; report-type names the second part's type.
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_top_level_header_fields() -> None:
    msg = parse(build_dsn(request(), NOW))
    assert msg["From"].addresses[0].addr_spec == "mailer-daemon@gw.secumail.test"
    assert msg["To"].addresses[0].addr_spec == "alice@good.test"
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5: no auto-reply loops
    assert msg["Subject"] == "Not delivered: Lab results"
    assert parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg["Message-ID"].endswith("@gw.secumail.test>")


def test_delivery_status_fields_for_a_failure() -> None:
    two = (BOB, DsnRecipient("carol@other.test", RecipientStatus.BOUNCED, "5.1.1", "550 no"))
    msg = parse(build_dsn(request(recipients=two), NOW))
    per_message, bob, carol = status_blocks(msg)
    # RFC 3464 §2.2: per-message fields.
    assert per_message["Reporting-MTA"] == "dns; gw.secumail.test"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == NOW - 60
    # RFC 3464 §2.3: per-recipient fields.
    assert bob["Final-Recipient"] == "rfc822; bob@example.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.7.10"
    assert bob["Remote-MTA"] == "dns; mx.example.test"
    assert bob["Diagnostic-Code"] == "smtp; mx.example.test offers no STARTTLS"
    assert carol["Final-Recipient"] == "rfc822; carol@other.test"
    assert (carol["Action"], carol["Status"]) == ("failed", "5.1.1")
    assert carol["Diagnostic-Code"] == "smtp; 550 no"
    assert carol["Remote-MTA"] is None


def test_delayed_notice() -> None:
    late = DsnRecipient("bob@example.test", RecipientStatus.DEFERRED, "4.4.1", "timeout")
    until = NOW + 86_400
    out = build_dsn(request(kind="delayed", recipients=(late,), retry_until=until), NOW)
    msg = parse(out)
    _, bob = status_blocks(msg)
    assert bob["Action"] == "delayed"  # RFC 3464 §2.3.3
    assert bob["Status"] == "4.4.1"
    assert parsedate_to_datetime(bob["Will-Retry-Until"]).timestamp() == until  # §2.3.7
    assert msg["Subject"] == "Delivery delayed: Lab results"
    assert "do not need to send it again" in human_text(msg)


def test_a_later_bounce_notice_says_it_was_accepted_first() -> None:
    gone = DsnRecipient("bob@example.test", RecipientStatus.BOUNCED, "5.1.1", "550 5.1.1 gone")
    for locale, subject, words in (
        ("en", "Not delivered after all: Lab results", "accepted your message"),
        ("nl", "Toch niet afgeleverd: Lab results", "aangenomen, maar"),
    ):
        msg = parse(build_dsn(request(kind="bounced", recipients=(gone,), locale=locale), NOW))
        _, bob = status_blocks(msg)
        assert (bob["Action"], bob["Status"]) == ("failed", "5.1.1")  # RFC 3464 §2.3.3
        assert msg["Subject"] == subject
        assert words in human_text(msg)


def test_original_headers_only_not_the_content() -> None:
    msg = parse(build_dsn(request(), NOW))
    headers = parts(msg)[2].get_content()
    assert "From: Alice <alice@good.test>" in headers
    assert "Message-ID: <m1@good.test>" in headers
    assert "Subject: Lab results" in headers


def test_without_original_details() -> None:
    req = request(original_from=None, original_message_id=None, original_subject=None)
    msg = parse(build_dsn(req, NOW))
    assert [p.get_content_type() for p in parts(msg)] == ["text/plain", "message/delivery-status"]
    assert msg["Subject"] == "Not delivered: your message"


# --- language ---------------------------------------------------------------------------


def test_dutch_notice() -> None:
    msg = parse(build_dsn(request(locale="nl"), NOW))
    text = human_text(msg)
    assert msg["Subject"] == "Niet afgeleverd: Lab results"
    assert "NIET VERZONDEN" in text
    assert "Ontvanger: bob@example.test" in text
    assert "Reden: mx.example.test offers no STARTTLS" in text
    assert "NOT SENT" not in text


def test_english_notice() -> None:
    text = human_text(parse(build_dsn(request(locale="en"), NOW)))
    assert "NOT SENT" in text
    assert "Recipient: bob@example.test" in text
    assert "NIET VERZONDEN" not in text


def test_unknown_locale_falls_back_to_english() -> None:
    msg = parse(build_dsn(request(locale="fy"), NOW))
    assert msg["Subject"].startswith("Not delivered")
    assert "NOT SENT" in human_text(msg)


def test_machine_part_is_the_same_in_every_language() -> None:
    # RFC 3464 §2: the delivery-status fields are not localised.
    def fields(locale: str) -> list[list[tuple[str, str]]]:
        blocks = status_blocks(parse(build_dsn(request(locale=locale), NOW)))
        return [list(b.items()) for b in blocks]

    assert fields("nl") == fields("en")


def test_dutch_text_survives_transfer_encoding() -> None:
    req = request(locale="nl", original_subject="Uitslag van de patiënt")
    text = human_text(parse(build_dsn(req, NOW)))
    assert "(Uitslag van de patiënt)" in text


# --- header injection and wire form -------------------------------------------------------


def test_crlf_in_subject_and_diagnostic_never_makes_a_header_line() -> None:
    evil = DsnRecipient(
        "bob@example.test",
        RecipientStatus.BOUNCED,
        "5.0.0",
        "550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@evil.test",
        details=("mx1: refused\r\nBcc: x@evil.test",),
    )
    req = request(
        recipients=(evil,),
        original_subject="Hi\r\nBcc: victim@evil.test\nX-Evil: 1",
        original_from="Alice <alice@good.test>\r\nBcc: y@evil.test",
        original_message_id="<m1@good.test>\r\nBcc: z@evil.test",
    )
    out = build_dsn(req, NOW)
    assert_crlf_only(out)
    lines = out.split(b"\r\n")
    assert not [ln for ln in lines if ln.startswith((b"Bcc:", b"X-Evil:"))]
    msg = parse(out)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    _, block = status_blocks(msg)  # exactly one recipient block
    assert block["Action"] == "failed"
    assert block["Final-Recipient"] == "rfc822; bob@example.test"


@pytest.mark.parametrize("locale", ["en", "nl"])
@pytest.mark.parametrize("kind", ["failed", "delayed"])
def test_ascii_input_gives_seven_bit_crlf_output(locale: str, kind: str) -> None:
    out = build_dsn(request(locale=locale, kind=kind, retry_until=NOW + 3600), NOW)
    assert out.isascii()
    assert_crlf_only(out)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))  # RFC 5322 §2.1.1


def test_long_non_ascii_subject_gives_crlf_only_output() -> None:
    # RFC 5322 §2.2.3 / RFC 2047 §2: a folded encoded Subject must fold with CRLF.
    subject = "Uitslag onderzoek patiënt " + "héél lang onderwerp " * 6
    out = build_dsn(request(locale="nl", original_subject=subject), NOW)
    assert out.isascii()
    assert_crlf_only(out)
    assert parse(out)["Subject"] == "Niet afgeleverd: " + " ".join(subject.split())


@pytest.mark.parametrize(
    "overrides",
    [
        # A remote server's reply in UTF-8 (the SMTP client decodes replies as UTF-8
        # with errors="replace", so U+FFFD may appear too).
        {"diagnostic": "550 5.1.1 Empfänger unbekannt \ufffd"},
        # RFC 6531/6533: SMTPUTF8 recipients and senders.
        {"address": "bjørn@example.test"},
        {"sender": "jöran@good.test"},
        # RFC 6532: a UTF-8 From field.
        {"original_from": "Jöran <joran@good.test>"},
    ],
    ids=["diagnostic", "recipient", "sender", "original-from"],
)
def test_non_ascii_input_still_yields_a_notice(overrides: dict[str, str]) -> None:
    rcpt = DsnRecipient(
        overrides.get("address", "bob@example.test"),
        RecipientStatus.BOUNCED,
        "5.1.1",
        overrides.get("diagnostic", "550 no such user"),
    )
    rest = {k: v for k, v in overrides.items() if k in ("sender", "original_from")}
    out = build_dsn(request(recipients=(rcpt,), **rest), NOW)
    assert_crlf_only(out)
    _, block = status_blocks(parse(out))
    assert block["Final-Recipient"] is not None
    assert block["Action"] == "failed"


def test_a_stored_subject_with_encoded_line_breaks_cannot_inject_a_header() -> None:
    # Subjects stored before the acceptance refused them, or by any other path.
    out = build_dsn(
        request(
            original_subject="=?utf-8?q?hi=0D=0ABcc:_spy@evil.test?=",
            original_from="=?utf-8?q?A=0D=0AX-Evil:_1?= <a@good.test>",
        ),
        NOW,
    )
    names = [n.lower() for n, _ in parse_header_section(out).fields]
    assert "bcc" not in names and "x-evil" not in names
    msg = parse(out)
    assert msg["Subject"] == "Not delivered: hi Bcc: spy@evil.test"
    assert b"\r\nBcc:" not in out and b"\r\nX-Evil:" not in out


def test_a_utf8_message_id_of_the_original_still_gives_an_ascii_notice() -> None:
    out = build_dsn(request(original_message_id="<\u00fc@good.test>"), NOW)
    assert out.isascii()
    assert "Message-ID: <\\x{FC}@good.test>" in parts(parse(out))[2].as_string()
