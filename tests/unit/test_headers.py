"""Strict header reading for the sender check (RFC 5322 §2.2, §3.4, §3.6.2)."""

from __future__ import annotations

import pytest

from secumail.mail.address import Address
from secumail.mail.headers import (
    HeaderError,
    injected_field,
    mailbox_of,
    originator_domains,
    parse_header_section,
    single_from_address,
)

GOOD = Address("john", "good.test")


def author(*header_lines: str) -> Address:
    message = "".join(line + "\r\n" for line in header_lines) + "\r\nbody\r\n"
    return single_from_address(parse_header_section(message.encode("utf-8")))


# --- header section -------------------------------------------------------------------


def test_fields_in_order_and_body_offset() -> None:
    msg = b"From: a@good.test\r\nTo: b@x.test\r\nSubject: hi\r\n\r\nbody\r\n"
    section = parse_header_section(msg)
    assert section.fields == [("From", "a@good.test"), ("To", "b@x.test"), ("Subject", "hi")]
    assert msg[section.body_offset :] == b"body\r\n"


def test_folded_field_is_unfolded() -> None:
    # RFC 5322 §2.2.3: a CRLF followed by WSP is folding.
    msg = b"Subject: one\r\n two\r\n\tthree\r\nX: y\r\n\r\n"
    section = parse_header_section(msg)
    assert section.first("subject") == "one two three"
    assert section.first("x") == "y"


def test_message_without_body() -> None:
    msg = b"From: a@good.test\r\nSubject: s\r\n"
    section = parse_header_section(msg)
    assert section.get_all("FROM") == ["a@good.test"]
    assert section.body_offset == len(msg)


def test_message_without_header_section() -> None:
    section = parse_header_section(b"\r\nFrom: a@evil.test\r\n")
    assert section.fields == []
    assert section.body_offset == 2


def test_from_in_the_body_is_not_a_header() -> None:
    section = parse_header_section(b"From: a@good.test\r\n\r\nFrom: b@evil.test\r\n")
    assert section.get_all("From") == ["a@good.test"]


@pytest.mark.parametrize(
    "msg",
    [
        b" continued: x\r\nFrom: a@good.test\r\n\r\n",  # starts with a continuation line
        b"From: a@good.test\r\nno colon here\r\n\r\n",
        b"From : b@evil.test\r\nFrom: a@good.test\r\n\r\n",  # WSP before ":" hides a From
        b"From\t: b@evil.test\r\nFrom: a@good.test\r\n\r\n",
        b": empty name\r\n\r\n",
    ],
)
def test_malformed_header_section_is_refused(msg: bytes) -> None:
    # RFC 5322 §3.6.8: field-name is 1*ftext (printable US-ASCII except ":").
    with pytest.raises(HeaderError):
        parse_header_section(msg)


# --- exactly one From, one mailbox ----------------------------------------------------


def test_one_from() -> None:
    assert author("From: john@good.test", "To: x@y.test") == GOOD


@pytest.mark.parametrize(
    "lines",
    [
        ("To: x@y.test",),
        ("From: john@good.test", "From: ceo@evil.test"),
        ("From: john@good.test", "FROM: ceo@evil.test"),
        ("from: ceo@evil.test", "Subject: s", "From: john@good.test"),
    ],
)
def test_zero_or_several_from_fields_are_refused(lines: tuple[str, ...]) -> None:
    # RFC 5322 §3.6: From occurs exactly once; DKIM and MUAs may pick different ones.
    with pytest.raises(HeaderError, match="exactly one From"):
        author(*lines)


def test_resent_from_is_not_from() -> None:
    assert author("Resent-From: x@evil.test", "From: john@good.test") == GOOD


@pytest.mark.parametrize(
    "value",
    [
        "john@good.test",
        " john@good.test ",
        "<john@good.test>",
        "John Doe <john@good.test>",
        "John Doe<john@good.test>",
        "john@good.test (John Doe)",
        "<john@good.test> (Doe, John; CEO: x@evil.test)",
        "John Q. Public <john@good.test>",  # RFC 5322 §4.1 obs-phrase
        "(x@evil.test) john@good.test",
        "John (a (nested) comment <x@evil.test>) <john@good.test>",
        "(escaped \\) paren <x@evil.test>) <john@good.test>",
        '"Doe, John" <john@good.test>',
        '"Doe, John <x@evil.test>" <john@good.test>',
        '"x@evil.test" <john@good.test>',
        '"Doe \\" <x@evil.test>" <john@good.test>',
        '"(not a comment" <john@good.test>',
        "Jöran Ærø <john@good.test>",  # RFC 6532 UTF-8 display name
        "=?utf-8?q?J=C3=B6ran?= <john@good.test>",
    ],
)
def test_from_mailbox(value: str) -> None:
    # RFC 5322 §3.4: mailbox = name-addr / addr-spec; §3.2.2 comments; §3.2.4 quoted.
    assert mailbox_of(value) == GOOD


def test_folded_from_field() -> None:
    assert author('From: "Doe, John"', " <john@good.test>") == GOOD


@pytest.mark.parametrize(
    "value",
    [
        "john@good.test, ceo@evil.test",  # RFC 5322 §3.6.2 mailbox-list
        "John <john@good.test>, CEO <ceo@evil.test>",
        "<john@good.test> <ceo@evil.test>",
        "Friends: john@good.test;",  # §3.4 group
        "Friends: <john@good.test>",
        "undisclosed-recipients:;",
        "<john@good.test",
        "john@good.test>",
        "John <<john@good.test>>",
        '"unterminated <john@good.test>',
        "(unterminated <john@good.test>",
        "",
        "John Doe",
        "john doe@good.test",
        "<john@evil..test>",
    ],
)
def test_from_not_exactly_one_valid_mailbox_is_refused(value: str) -> None:
    with pytest.raises(HeaderError):
        mailbox_of(value)


@pytest.mark.parametrize("value", ['Boss <"the boss"@good.test>', '"the boss"@good.test'])
def test_quoted_local_part_in_from(value: str) -> None:
    # RFC 5322 §3.4.1: local-part may be a quoted-string; the address is kept intact.
    assert str(mailbox_of(value)) == '"the boss"@good.test'


# --- originators and injected fields (issue 11) ------------------------------------------


def originators(head: str) -> set[tuple[str, str]]:
    return set(originator_domains(parse_header_section(head.encode() + b"\r\nbody")))


def test_every_originator_field_and_what_its_display_names_show() -> None:
    assert originators(
        'From: "boss@other.test" <a@good.test>\r\n'
        "Sender: (x@comment.test) s@good.test\r\n"
        "Resent-From: r@one.test, \"q, r\" <r@two.test>\r\n"
        "Resent-Sender: =?utf-8?q?rs=40encoded.test?= <rs@good.test>\r\n"
        "Reply-To: free@anywhere.test\r\n"
    ) == {
        ("From", "good.test"),
        ("From", "other.test"),
        ("Sender", "good.test"),
        ("Sender", "comment.test"),
        ("Resent-From", "one.test"),
        ("Resent-From", "two.test"),
        ("Resent-Sender", "good.test"),
        ("Resent-Sender", "encoded.test"),
    }


@pytest.mark.parametrize(
    "head",
    [
        "From: a@good.test\r\nSender: a@good.test\r\nSender: b@good.test\r\n",
        "From: a@good.test\r\nSender: a@good.test, b@good.test\r\n",
        "From: a@good.test\r\nSender: g: b@other.test;\r\n",
        "From: a@good.test\r\nResent-From: a@good.test,,\r\n",
    ],
)
def test_malformed_originators_are_errors(head: str) -> None:
    with pytest.raises(HeaderError):
        originators(head)


def test_injected_field_names_the_field() -> None:
    clean = parse_header_section(b"From: a@good.test\r\nSubject: =?utf-8?q?ok?=\r\n\r\n")
    assert injected_field(clean) is None
    bad = parse_header_section(
        b"From: a@good.test\r\nX-Tag: =?utf-8?q?a=0D=0ABcc:_x@evil.test?=\r\n\r\n"
    )
    assert injected_field(bad) == "X-Tag"


def test_the_author_read_once_gives_the_same_originators() -> None:
    section = parse_header_section(
        b'From: "boss@other.test" <a@good.test>\r\nSender: s@good.test\r\n\r\nbody'
    )
    author = single_from_address(section)
    assert originator_domains(section, author) == originator_domains(section)
