"""The TLS rank (mail/tls_strength.py): one line per case, names as OpenSSL gives them."""

from __future__ import annotations

import pytest

from secumail.mail.tls_strength import TlsUse, cipher_class, rank

ORDERED = [  # strongest first; equal ranks share a line's rank
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLSv1.2", "ECDHE-RSA-AES128-SHA256"),  # forward secret, CBC
    ("TLSv1.2", "AES256-GCM-SHA384"),  # static RSA: no forward secrecy
    ("TLSv1.2", "DES-CBC3-SHA"),  # broken
    ("TLSv1.1", "ECDHE-RSA-AES128-SHA"),
    ("TLSv1", "ECDHE-RSA-AES128-SHA"),
    ("SSLv3", "RC4-MD5"),
]


def test_ranks_fall_in_the_documented_order() -> None:
    ranks = [rank(v, c) for v, c in ORDERED]
    assert ranks == sorted(ranks, reverse=True)
    assert len(set(ranks)) == len(ranks)


@pytest.mark.parametrize(
    ("version", "cipher", "klass"),
    [
        ("TLSv1.3", "TLS_AES_128_GCM_SHA256", 3),
        ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", 3),
        ("TLSv1.3", "TLS_AES_128_CCM_SHA256", 3),
        ("TLSv1.3", "garbage", 0),
        ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305", 3),
        ("TLSv1.2", "DHE-RSA-AES256-GCM-SHA384", 3),
        ("TLSv1.2", "ECDHE-RSA-AES256-SHA384", 2),
        ("TLSv1.2", "AES128-SHA", 1),
        ("TLSv1.2", "RC4-SHA", 0),
        ("TLSv1.2", "ECDHE-RSA-DES-CBC3-SHA", 0),
        ("TLSv1.2", "ADH-AES128-GCM-SHA256", 0),  # anonymous: no authentication
        ("TLSv1.2", "EXP-RC4-MD5", 0),
        ("TLSv1.2", "NULL-SHA256", 0),
        ("TLSv1.2", "", 0),
    ],
)
def test_cipher_class(version: str, cipher: str, klass: int) -> None:
    assert cipher_class(version, cipher) == klass


def test_same_class_is_the_same_rank() -> None:
    # AES-256 is not counted above AES-128, nor ChaCha20 above AES-GCM.
    assert rank("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256") == rank(
        "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"
    )
    assert TlsUse("TLSv1.3", "TLS_AES_128_GCM_SHA256").rank == TlsUse(
        "TLSv1.3", "TLS_AES_256_GCM_SHA384"
    ).rank


def test_a_weak_tls13_name_or_an_unknown_version_ranks_low() -> None:
    assert rank("TLSv9", "TLS_AES_256_GCM_SHA384") < rank("TLSv1", "AES128-SHA")
    assert str(TlsUse("TLSv1.2", "X")) == "TLSv1.2 X"
