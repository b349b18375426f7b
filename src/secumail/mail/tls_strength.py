"""How strong a TLS connection a sender used: a rank from OpenSSL's version and cipher names.

Pure. The rank orders what `ssl.SSLObject.version()` and `.cipher()[0]` report, so a
sender that falls below what it used before can be told (`pipeline/sender_watch.py`):

    rank = 10 × version + class of the cipher

version: TLSv1.3 = 4, TLSv1.2 = 3, TLSv1.1 = 2, TLSv1 = 1, SSLv3 and anything unknown = 0.

class (within a version), from the OpenSSL cipher name:
    3  forward secret (ECDHE/DHE key exchange) and AEAD (GCM, CCM, ChaCha20-Poly1305);
       every TLS 1.3 suite (RFC 8446 §9.1, §B.4: all are AEAD with (EC)DHE)
    2  forward secret, not AEAD (CBC with HMAC, RFC 5246 §6.2.3.2)
    1  no forward secrecy (static RSA key exchange, RFC 5246 §7.4.7.1)
    0  broken: RC4 (RFC 7465), 3DES/DES, NULL, EXPORT, anonymous, MD5, unknown names

The same strength class within a version is one rank: AES-256 is not counted above AES-128,
nor ChaCha20 above AES-GCM (the NCSC-NL guidelines call all of them "good"). The gateway's
own listeners offer TLS 1.2+ with forward-secret AEAD suites only (`net/tls.py`), so what a
sender can fall to there is TLS 1.3 → TLS 1.2; the lower classes are ranked for the record
and for a gateway whose settings some day allow more.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

VERSIONS = {"TLSv1.3": 4, "TLSv1.2": 3, "TLSv1.1": 2, "TLSv1": 1}
_BROKEN = ("RC4", "DES", "NULL", "EXP", "ADH", "AECDH", "ANON", "MD5", "IDEA", "SEED")
_AEAD = ("GCM", "CCM", "CHACHA20")


@dataclass(frozen=True, slots=True)
class TlsUse:
    """The TLS of one submission: protocol version and cipher as OpenSSL names them."""

    version: str
    cipher: str

    @property
    def rank(self) -> int:
        return rank(self.version, self.cipher)

    def __str__(self) -> str:
        return f"{self.version} {self.cipher}"


def cipher_class(version: str, cipher: str) -> int:
    """3 forward-secret AEAD, 2 forward-secret CBC, 1 static RSA, 0 broken or unknown."""
    name = cipher.upper()
    if version == "TLSv1.3":
        # TLS 1.3 suites are named TLS_AES_128_GCM_SHA256 etc.; every one is AEAD + (EC)DHE.
        return 3 if name.startswith("TLS_") and any(a in name for a in _AEAD) else 0
    if not name or any(b in name.split("-") or name.startswith(b) for b in _BROKEN):
        return 0
    forward_secret = name.startswith(("ECDHE-", "DHE-", "EDH-"))
    aead = any(a in name for a in _AEAD)
    if forward_secret:
        return 3 if aead else 2
    return 1  # OpenSSL names static RSA suites without a key-exchange prefix: AES128-SHA


@functools.lru_cache(maxsize=256)  # a handful of (version, cipher) pairs in practice
def rank(version: str, cipher: str) -> int:
    """Higher is stronger; compare two ranks only (the number itself means nothing)."""
    return 10 * VERSIONS.get(version, 0) + cipher_class(version, cipher)
