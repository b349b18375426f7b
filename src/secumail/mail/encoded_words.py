"""RFC 2047 encoded words, decoded to check what a header value really says.

A header value from outside is judged after decoding: `=?utf-8?q?hi=0D=0ABcc:_x@y?=`
is harmless bytes on the wire, but a library that decodes it and folds the result again
(CPython's email package before the CVE-2024-6923 fix) writes a real `Bcc:` line. So
Secumail decodes encoded words itself, liberally (every form a lenient reader would
accept), and refuses line breaks and NUL wherever they appear. This module never
re-encodes: it only tells what a value means.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="; RFC 2231
# §5 adds "*language" after the charset. Liberal on purpose: readers accept more than the
# grammar allows (white space is the only thing no reader lets inside).
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([QqBb])\?([^?\s]*)\?=")
_Q_HEX = re.compile(r"=([0-9A-Fa-f]{2})")
# Everything str.splitlines() treats as a line boundary (what a Python re-folder would
# break on), and NUL.
LINE_BREAKING = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")
# Decoding again catches a value encoded twice for a reader that decodes twice.
_MAX_ROUNDS = 3


def _q_decode(text: str) -> bytes:
    # RFC 2047 §4.2: "_" is a space, "=XX" an octet.
    raw = text.replace("_", " ")
    return _Q_HEX.sub(lambda m: chr(int(m.group(1), 16)), raw).encode("latin-1", "replace")


def _b_decode(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        # A strict decoder would reject it; a lenient one drops what it cannot read.
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        return base64.b64decode(cleaned) if cleaned else b""


def _charset_decode(data: bytes, charset: str) -> str:
    name = charset.split("*", 1)[0]
    try:
        codecs.lookup(name)
    except LookupError:
        return data.decode("latin-1")  # unknown charset: every octet stays visible
    try:
        return data.decode(name, errors="replace")
    except (LookupError, UnicodeError, TypeError, ValueError):
        return data.decode("latin-1")


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, text = match.groups()
    data = _q_decode(text) if encoding in "Qq" else _b_decode(text)
    return _charset_decode(data, charset)


def decode_once(value: str) -> str:
    """The value with each encoded word replaced by its decoded text (one round)."""
    return _ENCODED_WORD.sub(_decode_word, value)


def decoded_forms(value: str) -> list[str]:
    """The value as given and as decoded by a reader that decodes up to three times."""
    forms = [value]
    for _ in range(_MAX_ROUNDS):
        decoded = decode_once(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def breaks_lines(value: str) -> bool:
    """True when the value, raw or decoded, holds CR, LF, NUL or another line break."""
    return any(not LINE_BREAKING.isdisjoint(form) for form in decoded_forms(value))


def has_control(value: str) -> bool:
    """True when the value, raw or decoded, holds any control character but TAB: what an
    RFC 5322 §2.2 field body (printable characters and white space) never needs."""
    return any(_CONTROL_BUT_TAB.search(form) for form in decoded_forms(value))


def display_text(value: str) -> str:
    """The value decoded (as far as `decoded_forms` goes) with every control character
    made a space and white space runs collapsed: safe to place in a new header or a
    line of text. What still looks like an encoded word is broken up ("=?" → "= ?"),
    so no later reader can decode a line break out of it."""
    text = _CONTROL.sub(" ", decoded_forms(value)[-1])
    return " ".join(text.split()).replace("=?", "= ?")


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_TAB = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
