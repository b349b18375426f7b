"""Credential secrets stored as scrypt hashes (RFC 7914), verified in constant time."""

from __future__ import annotations

import base64

import pytest

from secumail.pki import passwords
from secumail.pki.passwords import dummy_hash, hash_secret, new_secret, verify_secret


@pytest.fixture
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small scrypt cost for speed; the stored hash records its own parameters."""
    monkeypatch.setattr(passwords, "LOG2_N", 4)


def test_round_trip_with_production_parameters() -> None:
    stored = hash_secret("correct horse")
    assert stored.startswith("scrypt$15$8$1$")
    assert verify_secret("correct horse", stored)
    assert not verify_secret("correct hors", stored)


def test_round_trip(cheap: None) -> None:
    secret = new_secret()
    stored = hash_secret(secret)
    assert secret not in stored
    assert verify_secret(secret, stored)


# (Not "geheim\x00": scrypt's PBKDF2-HMAC zero-pads short keys, so trailing NULs are
# equivalent by construction - RFC 2104 §2; harmless, as the rest must be known.)
@pytest.mark.parametrize("wrong", ["", "Geheim", "geheim ", "\x00geheim", "gehéim", "geheimgeheim"])
def test_wrong_password(cheap: None, wrong: str) -> None:
    assert not verify_secret(wrong, hash_secret("geheim"))


def test_unicode_password(cheap: None) -> None:
    stored = hash_secret("wachtwoord-ö-🔑")
    assert verify_secret("wachtwoord-ö-🔑", stored)
    assert not verify_secret("wachtwoord-o-🔑", stored)


def test_same_password_gets_a_different_salt(cheap: None) -> None:
    a, b = hash_secret("x"), hash_secret("x")
    assert a != b
    assert verify_secret("x", a) and verify_secret("x", b)


def test_parameters_come_from_the_stored_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "LOG2_N", 5)
    stored = hash_secret("geheim")
    monkeypatch.setattr(passwords, "LOG2_N", 4)  # a later cost change keeps old hashes valid
    assert verify_secret("geheim", stored)


def test_new_secret_is_long_and_random() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) == 32 for s in secrets)


def _stored(salt: str = "c2FsdHNhbHRzYWx0c2FsdA==", digest: str = "AAAA", n: str = "4") -> str:
    return f"scrypt${n}$8$1${salt}${digest}"


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain-text-password",
        "scrypt$",
        "scrypt$15$8$1$salt",  # too few fields
        "scrypt$15$8$1$a$b$c",  # too many fields
        "bcrypt$4$8$1$c2FsdA==$AAAA",  # unknown scheme
        _stored(n="x"),
        _stored(n="-1"),
        _stored(n="0"),
        _stored(n="40"),  # over the memory limit
        "scrypt$4$0$1$c2FsdA==$AAAA",
        "scrypt$4$8$0$c2FsdA==$AAAA",
        _stored(salt="!!!not base64!!!"),
        _stored(digest="@@@"),
        _stored(salt="c2Fsd"),  # bad padding
        _stored(salt="sälz"),
    ],
)
def test_malformed_stored_hash_is_false_not_an_error(stored: str) -> None:
    assert verify_secret("geheim", stored) is False


def test_digest_of_another_length_is_false(cheap: None) -> None:
    stored = hash_secret("geheim")
    head, digest = stored.rsplit("$", 1)
    short = base64.b64encode(base64.b64decode(digest)[:16]).decode()
    assert verify_secret("geheim", f"{head}${short}") is False


def test_dummy_hash_never_verifies_and_is_reused(cheap: None) -> None:
    dummy_hash.cache_clear()
    try:
        assert dummy_hash() is dummy_hash()
        assert not verify_secret("", dummy_hash())
        assert not verify_secret("geheim", dummy_hash())
    finally:
        dummy_hash.cache_clear()


def test_a_new_password_never_starts_with_a_dash() -> None:
    """One in 64 URL-safe passwords would start with "-", and `swaks --auth-password
    -xyz` (or `curl -u`) then reads it as an option: the quick start failed on one."""
    made = [new_secret() for _ in range(3000)]
    assert not [s for s in made if s.startswith("-")]
    assert all(len(s) == 32 for s in made)
    assert any("-" in s for s in made), "the dash is still in the alphabet"
