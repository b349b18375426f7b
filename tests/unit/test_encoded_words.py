"""RFC 2047 encoded words decoded by our own code, to judge a header value by what it says.

The guard must hold whatever the interpreter's email package does (CVE-2024-6923: an
encoded CR LF comes out as a real header line in unpatched Pythons).
"""

from __future__ import annotations

import base64

import pytest

from secumail.mail.encoded_words import breaks_lines, decode_once, display_text, has_control


def b_word(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


@pytest.mark.parametrize(
    "value, decoded",
    [
        ("=?utf-8?q?caf=C3=A9_au_lait?=", "café au lait"),  # RFC 2047 §4.2: "_" is a space
        ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
        (b_word("Grüße"), "Grüße"),
        ("=?utf-8*nl?q?hoi?=", "hoi"),  # RFC 2231 §5 language tag
        ("no words here", "no words here"),
        ("=?utf-8?b?aGk?=", "hi"),  # padding left off: lenient readers accept it
    ],
)
def test_decodes_what_a_lenient_reader_decodes(value: str, decoded: str) -> None:
    assert decode_once(value) == decoded


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?hi=0D=0ABcc:_spy@evil.test?=",
        "=?utf-8?Q?hi=0Abcc:x?=",
        "=?UTF-8?B?" + base64.b64encode(b"a\rb").decode() + "?=",
        "=?utf-8?q?nul=00?=",
        b_word("a\u2028b"),  # str.splitlines() breaks here
        b_word("a\x0bb"),
        b_word("a\x85b"),
        "=?x-unknown?q?a=0Db?=",  # unknown charset: judged octet by octet
        "=?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3D0D=3D0Ab=3F=3D?=",  # encoded twice
        "plain\nline",
    ],
)
def test_line_breaks_are_found_raw_or_decoded(value: str) -> None:
    assert breaks_lines(value)
    assert has_control(value)


@pytest.mark.parametrize(
    "value", ["Lab results", "=?utf-8?q?caf=C3=A9?=", "tab\tinside", "=?utf-8?q?broken", "a=?b"]
)
def test_ordinary_values_pass(value: str) -> None:
    assert not breaks_lines(value)
    assert not has_control(value)


def test_control_characters_that_do_not_break_lines_are_still_controls() -> None:
    assert not breaks_lines(b_word("bell\x07"))
    assert has_control(b_word("bell\x07"))


def test_display_text_is_safe_to_put_in_a_new_header() -> None:
    text = display_text("=?utf-8?q?hi=0D=0ABcc:_spy@evil.test?=")
    assert text == "hi Bcc: spy@evil.test"
    assert not breaks_lines(text)
    # What is still encoded after three rounds is broken up, never handed on to decode.
    deep = "=?utf-8?q?x?="
    for _ in range(4):
        deep = "=?utf-8?b?" + base64.b64encode(deep.encode()).decode() + "?="
    assert "=?" not in display_text(deep)
