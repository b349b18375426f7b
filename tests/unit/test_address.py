"""Envelope addresses: RFC 5321 §4.1.2 Mailbox, §4.5.3.1 limits, RFC 6531 (SMTPUTF8),
IDNA domains in A-label form (RFC 5890/5891)."""

from __future__ import annotations

import pytest

from secumail.mail.address import Address, AddressError, normalise_domain, parse_address


def test_plain_address() -> None:
    addr = parse_address("Alice.Smith+tag@Mail.Good.Test")
    # The local part is kept as given (RFC 5321 §2.4: it may be case-sensitive).
    assert addr == Address("Alice.Smith+tag", "mail.good.test")
    assert str(addr) == "Alice.Smith+tag@mail.good.test"
    assert addr.is_ascii


def test_quoted_local_part() -> None:
    # RFC 5321 §4.1.2 Quoted-string.
    assert parse_address('"john doe"@good.test').local == '"john doe"'
    assert parse_address('"a\\"b"@good.test').local == '"a\\"b"'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "alice@",
        "@good.test",
        ".alice@good.test",
        "alice.@good.test",
        "al..ice@good.test",
        "al(ice@good.test",
        'a"b@good.test',
        '"a"b"@good.test',
        '"a\r\nb"@good.test',
        "alice@good",  # single label
        "alice@-good.test",
        "alice@good-.test",
        "alice@go_od.test",
        "alice@good..test",
        "alice@[192.0.2.1]",
        f"alice@{'a' * 64}.test",  # label over 63 octets
    ],
)
def test_invalid_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text, utf8=True)


def test_local_part_limit_is_64_octets() -> None:
    # RFC 5321 §4.5.3.1.1.
    assert parse_address("a" * 64 + "@good.test").local == "a" * 64
    with pytest.raises(AddressError):
        parse_address("a" * 65 + "@good.test")
    with pytest.raises(AddressError):
        parse_address("é" * 33 + "@good.test", utf8=True)  # 66 octets


def test_path_limit() -> None:
    # RFC 5321 §4.5.3.1.3: a path is at most 256 octets including "<" and ">".
    def address(last_label: int) -> str:
        return "a" * 64 + "@" + ".".join(["d" * 60, "d" * 60, "d" * last_label, "test"])

    assert len(address(62)) == 254
    assert parse_address(address(62)).local == "a" * 64
    with pytest.raises(AddressError):
        parse_address(address(63))


def test_utf8_local_part_needs_smtputf8() -> None:
    # RFC 6531 §3.3: UTF-8 mailboxes only when the transaction uses SMTPUTF8.
    with pytest.raises(AddressError):
        parse_address("jöran@good.test")
    assert parse_address("jöran@good.test", utf8=True) == Address("jöran", "good.test")


def test_utf8_quoted_local_part_needs_smtputf8() -> None:
    # RFC 5321 §4.1.2: qtextSMTP is printable US-ASCII; UTF-8 only with RFC 6531.
    with pytest.raises(AddressError):
        parse_address('"jöran"@good.test')


def test_utf8_domain_needs_smtputf8_and_becomes_a_label() -> None:
    with pytest.raises(AddressError):
        parse_address("bob@bücher.example")
    assert parse_address("bob@BÜCHER.example", utf8=True).domain == "xn--bcher-kva.example"


def test_domain_normalisation() -> None:
    assert normalise_domain("Good.TEST") == "good.test"
    assert normalise_domain("good.test.") == "good.test"
    assert normalise_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert normalise_domain("bücher.example") == "xn--bcher-kva.example"


def test_idna2008_keeps_sharp_s() -> None:
    # RFC 5892 (IDNA2008): "ß" is PVALID and goes into the A-label; IDNA2003 (Python's
    # "idna" codec) maps it to "ss": another domain, possibly another owner.
    assert normalise_domain("straße.example") == "xn--strae-oqa.example"


@pytest.mark.parametrize("domain", ["", ".", "a" * 250 + ".test", "good .test", "☃"])
def test_invalid_domains(domain: str) -> None:
    with pytest.raises(AddressError):
        normalise_domain(domain)
