"""Finding Dutch citizen service numbers (BSN) in text.

A BSN is nine digits (eight-digit numbers are written with a leading zero) that pass the
eleven-test ("elfproef"): 9·d1 + 8·d2 + 7·d3 + 6·d4 + 5·d5 + 4·d6 + 3·d7 + 2·d8 − 1·d9 is
a multiple of 11, and not all zeros. Written plain ("111222333"), or grouped
4-2-3 with dots or spaces ("1112.22.333", "1112 22 333"). A number that is part of a longer
run of digits (an IBAN, a phone number, an order number) is not one.
"""

from __future__ import annotations

import re

_CANDIDATE = re.compile(r"(?<![\d.])(\d{4}([. ]?)\d{2}\2\d{3})(?![\d]|\.\d)")
WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def eleven_test(digits: str) -> bool:
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit() or digits == "0" * 9:
        return False
    return sum(int(d) * w for d, w in zip(digits, WEIGHTS, strict=True)) % 11 == 0


def contains_bsn(text: str) -> bool:
    """Whether ``text`` holds at least one number that is a valid BSN."""
    return any(eleven_test(re.sub(r"[. ]", "", m.group(1))) for m in _CANDIDATE.finditer(text))
