"""Chunked AES-256-GCM for message bodies, one data key per message.

Layout: version octet, then chunks of up to CHUNK plaintext octets, each sealed with
nonce = 11-octet chunk index || final-flag octet and the message id as associated data.
A data key encrypts exactly one message, so deterministic nonces never repeat under one
key; the final flag stops truncation, the index stops reordering, the AAD stops swapping
bodies between messages.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secumail.errors import SpoolError

VERSION = b"\x01"
CHUNK = 1 << 20
TAG = 16


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def seal(key: bytes, message_id: str, plaintext: bytes) -> bytes:
    aead = AESGCM(key)
    aad = message_id.encode("ascii")
    parts = [VERSION]
    count = max(1, -(-len(plaintext) // CHUNK))
    for i in range(count):
        chunk = plaintext[i * CHUNK : (i + 1) * CHUNK]
        parts.append(aead.encrypt(_nonce(i, i == count - 1), chunk, aad))
    return b"".join(parts)


def open_sealed(key: bytes, message_id: str, sealed: bytes) -> bytes:
    if sealed[:1] != VERSION:
        raise SpoolError(f"spool body of {message_id} has an unknown format")
    aead = AESGCM(key)
    aad = message_id.encode("ascii")
    body = memoryview(sealed)[1:]
    step = CHUNK + TAG
    count = max(1, -(-len(body) // step))
    out = []
    try:
        for i in range(count):
            out.append(
                aead.decrypt(_nonce(i, i == count - 1), bytes(body[i * step : (i + 1) * step]), aad)
            )
    except InvalidTag as exc:
        raise SpoolError(f"spool body of {message_id} fails authentication") from exc
    return b"".join(out)


def wrap_key(master: bytes, message_id: str, data_key: bytes) -> bytes:
    """Encrypt a data key under the master key (AES-256-GCM, random nonce)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(master).encrypt(nonce, data_key, b"key:" + message_id.encode("ascii"))


def unwrap_key(master: bytes, message_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(
            wrapped[:12], wrapped[12:], b"key:" + message_id.encode("ascii")
        )
    except (InvalidTag, ValueError) as exc:
        raise SpoolError(f"data key of {message_id} does not unwrap with this master key") from exc
