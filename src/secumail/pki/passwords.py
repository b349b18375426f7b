"""Credential secrets: generated once, shown once, stored only as a slow hash (scrypt).

Format: `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`. Verification runs in a worker
thread (it takes tens of milliseconds by design).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

LOG2_N = 15
R = 8
P = 1
DKLEN = 32


def new_secret() -> str:
    """A random password: 32 characters from the URL-safe alphabet (~190 bits), never
    starting with "-": pasted after a command-line option (`swaks --auth-password`,
    `curl -u`), a leading dash would be read as another option."""
    while True:
        secret = secrets.token_urlsafe(24)
        if not secret.startswith("-"):
            return secret


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << log2_n,
        r=r,
        p=p,
        dklen=DKLEN,
        maxmem=256 * 1024 * 1024,
    )


def hash_secret(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, LOG2_N, R, P)
    b64 = base64.b64encode
    return f"scrypt${LOG2_N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(password: str, stored: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the username is unknown, so both cases cost the same."""
    return hash_secret(new_secret())
