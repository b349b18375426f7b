"""Reading bounces (mail/bounces.py): RFC 3464 DSNs, RFC 6533 UTF-8 DSNs, qmail and
plain-text bounces; auto-replies (RFC 3834) and feedback reports (RFC 5965) are not
bounces. The samples in tests/unit/bounces/ are written for these tests in the shapes
the real servers send."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from secumail.mail.bounces import MAX_DIAGNOSTIC, MAX_INPUT, MAX_RECIPIENTS, Bounce, parse_bounce
from secumail.mail.dsn import DsnRecipient, DsnRequest, build_dsn
from secumail.mail.status import RecipientStatus

SAMPLES = Path(__file__).parent / "bounces"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def summary(bounce: Bounce | None) -> tuple[str, list[tuple[str | None, str, str, bool]]] | None:
    if bounce is None:
        return None
    return bounce.format, [(r.address, r.action, r.status, r.permanent) for r in bounce.recipients]


# -- the corpus: file → (format, [(address, action, status, permanent)]) -----------------
CORPUS = {
    "postfix_one.eml": ("dsn", [("dr.visser@kliniek.example", "failed", "5.1.1", True)]),
    "postfix_two.eml": (
        "dsn",
        [
            ("j.bakker@gemeente.example", "failed", "5.1.1", True),
            ("archief@gemeente.example", "failed", "5.2.2", True),  # domain lower-cased
        ],
    ),
    "postfix_delayed.eml": ("dsn", [("lab@kliniek.example", "delayed", "4.4.1", False)]),
    "exim_dsn.eml": ("dsn", [("mentor@school.example", "failed", "5.0.0", True)]),
    "exim_text.eml": (
        "exim",
        [
            ("schade@verzekeraar.example", "failed", "5.1.1", True),
            ("claims@verzekeraar.example", "failed", "5.2.2", True),
        ],
    ),
    "qmail.eml": (
        "qmail",
        [
            ("secretaris@vereniging.example", "failed", "5.1.1", True),
            ("penningmeester@vereniging.example", "failed", "5.1.1", True),
        ],
    ),
    "sendmail_text.eml": ("text", [("vergunningen@provincie.example", "failed", "5.1.1", True)]),
    "m365_ndr.eml": (
        "dsn",
        [
            ("huisarts@praktijk.example", "failed", "5.1.10", True),
            ("assistent@praktijk.example", "failed", "5.7.509", True),
        ],
    ),
    "gmail.eml": ("dsn", [("onbekend@ziekenhuis.example", "failed", "5.1.1", True)]),
    "utf8_dsn.eml": (
        "dsn",
        [
            ("jürgen@xn--bcher-kva.example", "failed", "5.1.1", True),
            ("andré@xn--bcher-kva.example", "delayed", "4.2.2", False),
        ],
    ),
    # multipart/report without report-type, the status part as text/plain, no blank
    # lines between the per-message fields and the recipients, a comment after Status
    "sloppy_dsn.eml": (
        "dsn",
        [
            ("receptie@praktijk.example", "failed", "5.1.1", True),
            ("balie@praktijk.example", "delayed", "4.4.7", False),
        ],
    ),
    "out_of_office.eml": None,  # RFC 3834 auto-reply from a person, quoting a "code"
    "vacation.eml": None,  # auto-replied (vacation), null sender, address and code in it
    "x_autoreply.eml": None,  # X-Autoreply even from an address called MAILER-DAEMON
    "arf.eml": None,  # RFC 5965 feedback report, even with a delivery-status part in it
    "read_receipt.eml": None,  # RFC 8098 disposition notification
    "normal.eml": None,  # a person's reply quoting an old SMTP error
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_sample_reads_as_expected(name: str) -> None:
    assert summary(parse_bounce(sample(name))) == CORPUS[name]


def test_every_sample_in_the_corpus_is_in_the_table() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.eml")) == sorted(CORPUS)


@pytest.mark.parametrize(
    ("name", "reporting", "remote"),
    [
        ("postfix_one.eml", "mail.kliniek.example", ["mbox.kliniek.example"]),
        ("postfix_delayed.eml", "mail.kliniek.example", [None]),
        (
            "m365_ndr.eml",
            "am0pr01mb1234.eurprd01.prod.exchangelabs.com",
            ["praktijk-example.mail.protection.outlook.example"] * 2,
        ),
        # Gmail writes "dns; mx.ziekenhuis.example. (203.0.113.9, the server for ...)"
        ("gmail.eml", "googlemail.example", ["mx.ziekenhuis.example"]),
        ("utf8_dsn.eml", "mx.xn--bcher-kva.example", ["postfach.xn--bcher-kva.example", None]),
        ("qmail.eml", "mail.vereniging.example", ["[198.51.100.61]", None]),
        ("exim_text.eml", None, ["backend.verzekeraar.example"] * 2),
    ],
)
def test_reporting_and_remote_hosts_are_named(name: str, reporting: str | None, remote: list[str | None]) -> None:
    bounce = parse_bounce(sample(name))
    assert bounce is not None
    assert bounce.reporting_mta == reporting
    assert [r.remote_mta for r in bounce.recipients] == remote


def test_the_remote_reply_is_kept_as_one_clean_line() -> None:
    """RFC 3464 §2.3.6: Diagnostic-Code, unfolded (Microsoft 365 folds long replies over
    many continuation lines), at most 500 characters."""
    bounce = parse_bounce(sample("m365_ndr.eml"))
    assert bounce is not None
    first, second = (r.diagnostic for r in bounce.recipients)
    assert first == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient huisarts@praktijk.example "
        "not found by SMTP address lookup"
    )
    assert second is not None and second.startswith("550 5.7.509 Access denied, sending domain zorg.example does")
    assert len(second) == MAX_DIAGNOSTIC
    gmail = parse_bounce(sample("gmail.eml"))
    assert gmail is not None and gmail.recipients[0].diagnostic is not None
    assert "\n" not in gmail.recipients[0].diagnostic
    assert gmail.recipients[0].diagnostic.endswith("NoSuchUser a1-20020a170906 - gsmtp")


def test_utf8_diagnostics_and_escapes_are_read() -> None:
    """RFC 6533 §3: UTF-8 in a global status part, and \\x{HEX} escapes."""
    bounce = parse_bounce(sample("utf8_dsn.eml"))
    assert bounce is not None
    assert [r.diagnostic for r in bounce.recipients] == [
        "550 5.1.1 Postfach „jürgen“ unbekannt",
        "452 4.2.2 Postfach von andré ist voll",
    ]


def test_line_ends_do_not_matter() -> None:
    crlf = sample("postfix_one.eml")
    assert b"\r\n" in crlf
    assert parse_bounce(crlf.replace(b"\r\n", b"\n")) == parse_bounce(crlf)


def test_a_quoted_original_is_not_read_as_part_of_the_bounce() -> None:
    """The copy of the original after qmail's and Exim's markers quotes addresses and
    replies that belong to nobody in this bounce (the table lists exactly two each)."""
    for name in ("exim_text.eml", "qmail.eml"):
        bounce = parse_bounce(sample(name))
        assert bounce is not None
        assert all("else.example" not in (r.address or "") for r in bounce.recipients)


# -- the notice Secumail itself sends reads back ------------------------------------------
@pytest.mark.parametrize("kind", ["failed", "delayed"])
def test_a_notice_from_mail_dsn_reads_back(kind: str) -> None:
    request = DsnRequest(
        reporting_mta="gw.zorg.example",
        sender="poli@zorg.example",
        original_id="06H1TEST0000000R",
        arrival=1_790_000_000.0,
        recipients=(
            DsnRecipient("dr@kliniek.example", RecipientStatus.REFUSED_INSECURE, "5.7.10",
                         "no secure route: STARTTLS not offered", "mx.kliniek.example"),
            DsnRecipient("jürgen@bücher.example", RecipientStatus.BOUNCED, "5.1.1", "550 5.1.1 unbekannt"),
        ),
        kind=kind,
        retry_until=1_790_086_400.0 if kind == "delayed" else None,
    )
    bounce = parse_bounce(build_dsn(request, 1_790_000_100.0))
    assert bounce is not None and bounce.format == "dsn" and bounce.reporting_mta == "gw.zorg.example"
    assert [(r.address, r.action, r.status, r.diagnostic, r.remote_mta) for r in bounce.recipients] == [
        ("dr@kliniek.example", kind, "5.7.10", "no secure route: STARTTLS not offered", "mx.kliniek.example"),
        ("jürgen@xn--bcher-kva.example", kind, "5.1.1", "550 5.1.1 unbekannt", None),
    ]


# -- strict about values -----------------------------------------------------------------
def dsn(fields: str, *, part_type: str = "message/delivery-status", extra: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.kliniek.example\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        f"--b\r\nContent-Type: {part_type}\r\n{extra}\r\n"
        "Reporting-MTA: dns; mx.kliniek.example\r\n\r\n" + fields + "\r\n--b--\r\n"
    ).encode()


GOOD = "Final-Recipient: rfc822; dr@kliniek.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"


@pytest.mark.parametrize(
    "status",
    ["5.1", "5.1.1.1", "6.1.1", "3.0.0", "5.1.1234", "5.1.a", "\u0665.1.1", "5.\u00b2.1", "5,1,1", "", "x"],
)
def test_a_status_that_is_not_rfc_3463_drops_the_recipient(status: str) -> None:
    """RFC 3463 §2: class 2, 4 or 5, then 1-3 ASCII digits twice."""
    raw = dsn(GOOD.replace("Status: 5.1.1", f"Status: {status}"))
    assert parse_bounce(raw) is None


@pytest.mark.parametrize(
    ("action", "status"), [("delivered", "2.0.0"), ("relayed", "2.0.0"), ("expanded", "2.0.0"), ("failed", "4.4.7")]
)
def test_only_a_failed_action_with_a_class_5_status_is_permanent(action: str, status: str) -> None:
    """RFC 3464 §2.3.3: success reports (NOTIFY=SUCCESS, RFC 3461) are reports too."""
    bounce = parse_bounce(dsn(GOOD.replace("Action: failed", f"Action: {action}").replace("5.1.1", status)))
    assert summary(bounce) == ("dsn", [("dr@kliniek.example", action, status, False)])


@pytest.mark.parametrize("action", ["bounced", "fail", "", "failed!", "de\u00adlayed"])
def test_an_action_that_is_not_rfc_3464_drops_the_recipient(action: str) -> None:
    assert parse_bounce(dsn(GOOD.replace("Action: failed", f"Action: {action}"))) is None


@pytest.mark.parametrize(
    "value",
    [
        "rfc822; not an address",
        "rfc822; dr@kliniek",  # one label
        "rfc822; dr@127.0.0.1",
        "rfc822; dr@kliniek.example\x00x",
        "x400; /G=dr/S=kliniek/",
        "rfc822; =?utf-8?q?dr=0D=0ABcc:x@evil.example?=@kliniek.example",
        "rfc822; dr@kliniek.example, other@evil.example",
    ],
)
def test_an_invalid_final_recipient_gives_no_address(value: str) -> None:
    bounce = parse_bounce(dsn(GOOD.replace("rfc822; dr@kliniek.example", value)))
    assert bounce is not None
    assert bounce.recipients[0].address is None
    assert bounce.recipients[0].status == "5.1.1"


def test_original_recipient_stands_in_for_an_invalid_final_recipient() -> None:
    """RFC 3464 §2.3.1: the ORCPT, xtext-encoded (RFC 3461 §4.2)."""
    fields = "Original-Recipient: rfc822; dr+2Bpoli@kliniek.example\r\n" + GOOD.replace(
        "rfc822; dr@kliniek.example", "rfc822; ???"
    )
    bounce = parse_bounce(dsn(fields))
    assert bounce is not None and bounce.recipients[0].address == "dr+poli@kliniek.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dns; MX.Kliniek.Example.", "mx.kliniek.example"),
        ("dns; [192.0.2.1]", "[192.0.2.1]"),
        ("dns; 192.0.2.1", "[192.0.2.1]"),
        ("dns; [IPv6:2001:DB8::1]", "[IPv6:2001:db8::1]"),
        ("dns; mx.kliniek.example\x00evil", None),
        ("dns; -bad-.example", None),
        ("smtp; mx.kliniek.example", None),
        ("dns; ", None),
    ],
)
def test_remote_mta_is_a_host_name_or_an_address_literal(value: str, expected: str | None) -> None:
    bounce = parse_bounce(dsn(GOOD + f"Remote-MTA: {value}\r\n"))
    assert bounce is not None and bounce.recipients[0].remote_mta == expected


@pytest.mark.parametrize(
    "value",
    [
        "smtp; 550 5.1.1 no\x00such\x1buser\x7f",
        "smtp; =?utf-8?q?550_5.1.1_no=0D=0ABcc:_x@evil.example?=",
        "smtp; 550 5.1.1 \\x{D}\\x{A}Bcc: x@evil.example \\x{2028}",
        "smtp; 550 5.1.1 =?utf-8?b?" + base64.b64encode(b"\r\nX-Evil: 1").decode() + "?=",
    ],
)
def test_a_diagnostic_never_holds_a_control_character(value: str) -> None:
    bounce = parse_bounce(dsn(GOOD + f"Diagnostic-Code: {value}\r\n"))
    assert bounce is not None
    diagnostic = bounce.recipients[0].diagnostic
    assert diagnostic is not None and diagnostic.startswith("550 5.1.1")
    assert diagnostic.isprintable() and "=?" not in diagnostic


def test_an_encoded_word_in_a_diagnostic_is_decoded() -> None:
    bounce = parse_bounce(dsn(GOOD + "Diagnostic-Code: smtp; 550 5.1.1 =?utf-8?q?Postfach_unbekannt?=\r\n"))
    assert bounce is not None and bounce.recipients[0].diagnostic == "550 5.1.1 Postfach unbekannt"


def test_a_base64_global_status_part_is_read() -> None:
    """RFC 6533 §6: message/global-delivery-status may be transfer-encoded."""
    fields = "Final-Recipient: utf-8; jürgen@bücher.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    body = base64.encodebytes(("Reporting-MTA: dns; mx.bücher.example\r\n\r\n" + fields).encode()).decode()
    raw = (
        'Content-Type: multipart/report; report-type=global-delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        "--b\r\nContent-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body + "--b--\r\n"
    ).encode()
    bounce = parse_bounce(raw)
    assert summary(bounce) == ("dsn", [("jürgen@xn--bcher-kva.example", "failed", "5.1.1", True)])
    assert bounce is not None and bounce.reporting_mta == "mx.xn--bcher-kva.example"


def test_an_attached_message_is_not_read() -> None:
    """A delivery-status part inside a forwarded message (message/rfc822) is the
    forwarded message's business, not a report to us."""
    inner = dsn(GOOD).decode()
    raw = (
        "From: Collega <collega@kliniek.example>\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        "--outer\r\nContent-Type: text/plain\r\n\r\nSee the attached bounce.\r\n"
        f"--outer\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--outer--\r\n"
    ).encode()
    assert parse_bounce(raw) is None


# -- the plain-text heuristic and auto-replies ------------------------------------------
EXIM = sample("exim_text.eml")


def with_header(raw: bytes, line: str) -> bytes:
    return line.encode() + b"\n" + raw


@pytest.mark.parametrize(
    "line",
    [
        "X-Autoreply: yes",
        "X-Autorespond: yes",
        "Precedence: auto_reply",
        "Subject: Out of Office",
        "Subject: Afwezig",
        "Subject: =?utf-8?q?Automatisch_antwoord=3A_Verwijzing?=",
    ],
)
def test_an_auto_reply_mark_stops_the_text_heuristic(line: str) -> None:
    """RFC 3834 and the vendor marks: a text bounce lookalike with one is not a bounce."""
    raw = EXIM.replace(b"Subject: Mail delivery failed: returning message to sender\n", b"")
    assert parse_bounce(raw) is not None
    assert parse_bounce(with_header(raw, line)) is None


def test_the_text_heuristic_needs_a_mail_system_sender() -> None:
    person = EXIM.replace(b"Return-path: <>\n", b"").replace(
        b"Mail Delivery System <Mailer-Daemon@mx.verzekeraar.example>", b"Piet <piet@verzekeraar.example>"
    )
    assert parse_bounce(person) is None
    # the null sender alone (Return-Path: <>) is enough, when no auto-reply mark is there
    null_sender = EXIM.replace(
        b"Mail Delivery System <Mailer-Daemon@mx.verzekeraar.example>", b"Piet <piet@verzekeraar.example>"
    )
    assert parse_bounce(null_sender.replace(b"Auto-Submitted: auto-replied\n", b"")) is not None
    assert parse_bounce(null_sender) is None  # auto-replied from a person's address


def test_a_structured_report_is_read_whatever_its_auto_submitted_says() -> None:
    """RFC 3464 DSNs carry Auto-Submitted: auto-replied (RFC 3834 §5) and are bounces."""
    assert b"Auto-Submitted: auto-replied" in sample("postfix_one.eml")
    assert parse_bounce(sample("postfix_one.eml")) is not None


def test_a_reply_far_from_any_address_is_not_attributed() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.kliniek.example\r\nSubject: Undeliverable\r\n\r\n"
        "  dr@kliniek.example\r\n" + "filler line\r\n" * 12 + "550 5.1.1 user unknown\r\n"
    ).encode()
    assert parse_bounce(raw) is None


# -- bounded work, hostile input --------------------------------------------------------
def test_a_bounce_that_returns_a_large_original_is_still_read() -> None:
    """MTAs often return the whole original (RFC 3462 §2 puts it last): only the first
    MAX_INPUT octets are read, and the report comes before the original."""
    raw = sample("postfix_one.eml")
    closing = raw.rindex(b"--4D2A41C0A1.1733562901/mail.kliniek.example--")
    original = (
        b"--4D2A41C0A1.1733562901/mail.kliniek.example\r\n"
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Subject: scan\r\nContent-Type: application/pdf\r\n\r\n"
        + b"JVBERi0xLjcK" * (4 * MAX_INPUT // 12)
        + b"\r\n"
    )
    big = raw[:closing] + original + raw[closing:]
    assert len(big) > 4 * MAX_INPUT
    bounce = parse_bounce(big)
    assert bounce is not None and bounce.format == "dsn"
    assert [(r.address, r.action, r.status) for r in bounce.recipients] == [
        ("dr.visser@kliniek.example", "failed", "5.1.1")
    ]


def test_recipients_per_report_are_capped() -> None:
    block = "Final-Recipient: rfc822; r{}@kliniek.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    bounce = parse_bounce(dsn("".join(block.format(i) for i in range(MAX_RECIPIENTS + 500))))
    assert bounce is not None and len(bounce.recipients) == MAX_RECIPIENTS
    assert bounce.recipients[-1].address == f"r{MAX_RECIPIENTS - 1}@kliniek.example"


def test_a_huge_report_is_read_up_to_the_cap() -> None:
    raw = dsn(GOOD + "Diagnostic-Code: smtp; 550 5.1.1 " + "x" * 50_000 + "\r\n" + "X-Filler: y\r\n" * 900_000)
    assert len(raw) > 10 * MAX_INPUT
    bounce = parse_bounce(raw)
    assert bounce is not None
    assert bounce.recipients[0].diagnostic is not None and len(bounce.recipients[0].diagnostic) == MAX_DIAGNOSTIC


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00\x00",
        b"\r\n\r\n\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary at all",
        b'Content-Type: multipart/report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n\x00\xff:\r\n--b--",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 3000,
        b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822;\r\nAction:\r\nStatus:\r\n",
        b"Content-Type: text/plain; charset=rot13\r\nFrom: MAILER-DAEMON@x.example\r\n\r\n\x80\x81 550 5.1.1",
        b"From: MAILER-DAEMON@x.example\r\n\r\nHi. This is the qmail-send program at \x00.\r\n<>:\r\n",
        b"Content-Type: multipart/report; report-type*=''delivery-status; boundary*0=b\r\n\r\n--b--",
    ],
)
def test_malformed_input_is_not_a_bounce(raw: bytes) -> None:
    assert parse_bounce(raw) is None
