"""SMTP command lines and MAIL/RCPT arguments (RFC 5321 §4.1.1, §4.1.2, RFC 6531)."""

from __future__ import annotations

import pytest

from secumail.mail.address import Address
from secumail.mail.smtp_command import (
    Command,
    CommandError,
    NeedsSmtputf8,
    PathArgument,
    parse_command,
    parse_params,
    parse_path,
)

# --- parse_command --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"QUIT", Command("QUIT", "")),
        (b"ehlo client.test", Command("EHLO", "client.test")),
        (b"mail FROM:<a@good.test> SIZE=10", Command("MAIL", "FROM:<a@good.test> SIZE=10")),
        (b"NOOP   ", Command("NOOP", "")),
        (b"RCPT  TO:<b@good.test>", Command("RCPT", "TO:<b@good.test>")),
    ],
)
def test_parse_command_upper_cases_the_verb(line: bytes, expected: Command) -> None:
    # RFC 5321 §2.4: verbs are case-insensitive.
    assert parse_command(line) == expected


@pytest.mark.parametrize("line", [b"MAIL FROM:<a\x00@good.test>", b"NOOP\rRSET", b"NOOP\nRSET"])
def test_parse_command_refuses_control_characters(line: bytes) -> None:
    with pytest.raises(CommandError):
        parse_command(line)


def test_parse_command_refuses_invalid_utf8() -> None:
    with pytest.raises(CommandError, match="UTF-8"):
        parse_command(b"MAIL FROM:<\xff@good.test>")


# --- parse_path -----------------------------------------------------------------------


def test_mail_from_path() -> None:
    assert parse_path("FROM:<alice@Good.Test>", "FROM", allow_null=True) == PathArgument(
        Address("alice", "good.test")
    )


def test_keyword_is_case_insensitive() -> None:
    assert parse_path("to:<bob@good.test>", "TO", allow_null=False).address == Address(
        "bob", "good.test"
    )


def test_wrong_keyword_is_refused() -> None:
    with pytest.raises(CommandError, match="MAIL FROM"):
        parse_path("TO:<bob@good.test>", "FROM", allow_null=True)


def test_null_reverse_path() -> None:
    # RFC 5321 §4.5.5: MAIL FROM:<> for notifications.
    assert parse_path("FROM:<>", "FROM", allow_null=True) == PathArgument(None)


def test_null_forward_path_is_refused() -> None:
    with pytest.raises(CommandError, match="Null"):
        parse_path("TO:<>", "TO", allow_null=False)


def test_source_route_is_ignored() -> None:
    # RFC 5321 §4.1.1.3 / Appendix C: accept the route, use only the mailbox.
    arg = parse_path("TO:<@relay1.test,@relay2.test:bob@good.test>", "TO", allow_null=False)
    assert arg.address == Address("bob", "good.test")


@pytest.mark.parametrize(
    "argument",
    [
        "FROM:alice@good.test",  # no angle brackets
        "FROM:<alice@good.test",
        "FROM:<alice@good.test>SIZE=10",  # params need a space
        "FROM:<<alice@good.test>>",
        "FROM:<alice>",
        "FROM:<alice@>",
        "FROM:<@good.test>",
        "FROM:<al ice@good.test>",
        "FROM:<alice@@good.test>",
        "FROM:<alice@good_test.test>",
        "FROM:<.alice@good.test>",
        "FROM:<alice.@good.test>",
        "FROM:<al..ice@good.test>",
    ],
)
def test_invalid_paths_are_refused(argument: str) -> None:
    with pytest.raises(CommandError):
        parse_path(argument, "FROM", allow_null=True)


def test_params_are_parsed_with_upper_case_keys() -> None:
    # RFC 5321 §4.1.2 esmtp-param; RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8.
    arg = parse_path(
        "FROM:<alice@good.test> size=1000 BODY=8BITMIME SMTPUTF8", "FROM", allow_null=True
    )
    assert arg.params == {"SIZE": "1000", "BODY": "8BITMIME", "SMTPUTF8": None}


def test_params_on_null_path() -> None:
    arg = parse_path("FROM:<> SIZE=5", "FROM", allow_null=True)
    assert arg == PathArgument(None, {"SIZE": "5"})


def test_smtputf8_local_part() -> None:
    # RFC 6531 §3.3: UTF-8 in the local part with SMTPUTF8.
    arg = parse_path("FROM:<jöran@good.test> SMTPUTF8", "FROM", allow_null=True)
    assert arg.address == Address("jöran", "good.test")
    assert not arg.address.is_ascii


def test_utf8_reverse_path_without_smtputf8_is_refused() -> None:
    # RFC 6531 §3.4: a UTF-8 reverse-path needs the SMTPUTF8 parameter on the same MAIL
    # command; the server answers 553 5.6.7 (RFC 6531 §3.5).
    with pytest.raises(CommandError):
        parse_path("FROM:<jöran@good.test>", "FROM", allow_null=True)


def test_idna_domain_becomes_a_labels() -> None:
    # RFC 5890 §2.3.2.1: the A-label form is what DNS and the MX lookup use. A U-label
    # domain is itself UTF-8, so it needs SMTPUTF8 too (RFC 6531 §3.2).
    arg = parse_path("TO:<bob@Bücher.example>", "TO", allow_null=False, smtputf8=True)
    assert arg.address == Address("bob", "xn--bcher-kva.example")
    with pytest.raises(NeedsSmtputf8):
        parse_path("TO:<bob@Bücher.example>", "TO", allow_null=False)


def test_local_part_of_64_octets_is_accepted_65_refused() -> None:
    # RFC 5321 §4.5.3.1.1: local part at most 64 octets.
    assert parse_path(f"TO:<{'a' * 64}@good.test>", "TO", allow_null=False).address
    with pytest.raises(CommandError):
        parse_path(f"TO:<{'a' * 65}@good.test>", "TO", allow_null=False)


def test_local_part_limit_counts_utf8_octets() -> None:
    # 33 × "ö" is 33 characters but 66 octets.
    with pytest.raises(CommandError):
        parse_path(f"TO:<{'ö' * 33}@good.test> SMTPUTF8", "TO", allow_null=False)


# --- parse_params ---------------------------------------------------------------------


def test_no_params() -> None:
    assert parse_params("") == {}
    assert parse_params("   ") == {}


def test_param_value_is_kept_verbatim() -> None:
    assert parse_params(" ENVID=Abc+2Bx AUTH=<>") == {"ENVID": "Abc+2Bx", "AUTH": "<>"}


@pytest.mark.parametrize("text", [" SIZE=1 SIZE=2", " SIZE=1 size=2", " SMTPUTF8 smtputf8"])
def test_duplicate_params_are_refused(text: str) -> None:
    with pytest.raises(CommandError, match="Duplicate"):
        parse_params(text)


@pytest.mark.parametrize(
    "text",
    [
        " SIZE=",  # esmtp-value is 1*char
        " =10",
        " -SIZE=1",  # esmtp-keyword starts with a letter or digit
        " SI_ZE=1",
        " KEY=a=b",  # "=" is not allowed in a value
        " KEY=é",  # values are printable US-ASCII
    ],
)
def test_invalid_params_are_refused(text: str) -> None:
    with pytest.raises(CommandError, match="Invalid parameter"):
        parse_params(text)
