"""SMTP replies: RFC 5321 §4.2 (multi-line form), RFC 2034 §4 and RFC 3463 (enhanced codes)."""

from __future__ import annotations

import pytest

from secumail.mail import reply as R
from secumail.mail.reply import Reply, default_enhanced, split_enhanced


def test_single_line() -> None:
    assert Reply(250, "2.1.0", "Sender ok").render() == b"250 2.1.0 Sender ok\r\n"


def test_multi_line_carries_enhanced_code_on_every_line() -> None:
    # RFC 2034 §4: every line of a multi-line reply starts with the enhanced code.
    # RFC 5321 §4.2.1: "code-" on every line but the last, "code " on the last.
    rendered = Reply(550, "5.7.1", "first\nsecond\nthird").render()
    assert rendered == b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"


def test_multi_line_without_enhanced_code() -> None:
    rendered = Reply(250, "", "mx.good.test\nPIPELINING\nSMTPUTF8").render()
    assert rendered == b"250-mx.good.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"


def test_354_has_no_enhanced_code() -> None:
    # RFC 2034 §4: enhanced codes go with 2xx, 4xx and 5xx replies only.
    assert R.START_DATA.render() == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_utf8_text_is_encoded() -> None:
    assert Reply(550, "5.1.1", "Empfänger").render() == "550 5.1.1 Empfänger\r\n".encode()


def test_named_replies_agree_with_their_class() -> None:
    # RFC 3463 §3.1: the class of the enhanced code equals the first digit of the code.
    for reply in vars(R).values():
        if isinstance(reply, Reply) and reply.enhanced:
            assert reply.enhanced[0] == str(reply.code)[0], reply
    assert R.INTAKE_FULL.code == 451 and R.INTAKE_FULL.enhanced == "4.3.2"  # admission control, docs/architecture.md


@pytest.mark.parametrize(
    ("code", "positive", "temporary", "permanent"),
    [
        (250, True, False, False),
        (354, True, False, False),
        (421, False, True, False),
        (554, False, False, True),
    ],
)
def test_classification(code: int, positive: bool, temporary: bool, permanent: bool) -> None:
    reply = Reply(code, "", "x")
    assert (reply.is_positive, reply.is_temporary, reply.is_permanent) == (
        positive,
        temporary,
        permanent,
    )


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.1.5 Recipient ok", ("2.1.5", "Recipient ok")),
        (550, "5.7.10 Encryption needed", ("5.7.10", "Encryption needed")),
        (452, "4.5.3", ("4.5.3", "")),
        (550, "2.1.5 mismatched class", ("", "2.1.5 mismatched class")),
        (250, "Ok", ("", "Ok")),
        (550, "5.1234.1 too many digits", ("", "5.1234.1 too many digits")),
        (550, "5.1.1x junk", ("", "5.1.1x junk")),
        (550, "3.1.1 no such class", ("", "3.1.1 no such class")),
        (550, "", ("", "")),
    ],
)
def test_split_enhanced(code: int, text: str, expected: tuple[str, str]) -> None:
    # RFC 3463 §2: class "." subject "." detail, 1-3 digits each; class is 2, 4 or 5.
    assert split_enhanced(code, text) == expected


def test_default_enhanced() -> None:
    # RFC 3463 §3.1: X.0.0 "other undefined status".
    assert default_enhanced(250) == "2.0.0"
    assert default_enhanced(451) == "4.0.0"
    assert default_enhanced(554) == "5.0.0"


def test_str_is_one_line() -> None:
    assert str(Reply(550, "5.7.1", "a\nb")) == "550 5.7.1 a / b"
