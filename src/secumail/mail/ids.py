"""Identifiers: message ids that sort by time and are safe in replies and file names."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now: float | None = None) -> str:
    """16 characters of Crockford base32: 48 bits of milliseconds, 32 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 32) | secrets.randbits(32)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(75, -1, -5))


def is_message_id(text: str) -> bool:
    return len(text) == 16 and all(c in _CROCKFORD for c in text)
