"""Message bodies sealed with chunked AES-256-GCM (NIST SP 800-38D): confidentiality and
integrity per chunk; the chunk index, final flag and message id (AAD) bind the chunks
into one body of one message, so reordering, truncation and swapping are detected."""

from __future__ import annotations

import pytest

from secumail.errors import SpoolError
from secumail.spool import sealing
from secumail.spool.sealing import new_data_key, open_sealed, seal, unwrap_key, wrap_key

C = 16  # a small chunk so every boundary is cheap to reach
MID = "01HABCDEFGHJKMNP"


@pytest.fixture(autouse=True)
def small_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealing, "CHUNK", C)


def plaintext(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def chunks_of(sealed: bytes) -> list[bytes]:
    body, step = sealed[1:], C + sealing.TAG
    return [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 2 * C, 3 * C, 3 * C + 5])
def test_round_trip(size: int) -> None:
    key = new_data_key()
    data = plaintext(size)
    sealed = seal(key, MID, data)
    assert open_sealed(key, MID, sealed) == data
    n_chunks = max(1, -(-size // C))
    assert len(sealed) == 1 + size + n_chunks * sealing.TAG
    if size >= 8:
        assert data[:8] not in sealed  # not stored in the clear


def test_round_trip_with_the_real_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealing, "CHUNK", 1 << 20)
    key = new_data_key()
    data = plaintext((1 << 20) + 1)
    assert open_sealed(key, MID, seal(key, MID, data)) == data


def test_every_message_gets_its_own_key() -> None:
    assert new_data_key() != new_data_key()
    assert len(new_data_key()) == 32  # AES-256


@pytest.mark.parametrize("size", [0, C, 2 * C + 3])
def test_flipping_any_byte_is_detected(size: int) -> None:
    key = new_data_key()
    sealed = seal(key, MID, plaintext(size))
    for i in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[i] ^= 0x01
        with pytest.raises(SpoolError):
            open_sealed(key, MID, bytes(damaged))


@pytest.mark.parametrize("size", [C + 1, 2 * C, 3 * C])
def test_dropping_the_last_chunk_is_detected(size: int) -> None:
    key = new_data_key()
    sealed = seal(key, MID, plaintext(size))
    truncated = sealed[:1] + b"".join(chunks_of(sealed)[:-1])
    with pytest.raises(SpoolError):
        open_sealed(key, MID, truncated)


def test_any_truncation_is_detected() -> None:
    key = new_data_key()
    sealed = seal(key, MID, plaintext(3 * C))
    for n in range(len(sealed)):
        with pytest.raises(SpoolError):
            open_sealed(key, MID, sealed[:n])


def test_appending_is_detected() -> None:
    key = new_data_key()
    sealed = seal(key, MID, plaintext(2 * C))
    for extra in (b"\x00", chunks_of(sealed)[0], chunks_of(sealed)[-1]):
        with pytest.raises(SpoolError):
            open_sealed(key, MID, sealed + extra)


def test_swapping_chunks_is_detected() -> None:
    key = new_data_key()
    sealed = seal(key, MID, plaintext(3 * C))
    a, b, c = chunks_of(sealed)
    for order in ((b, a, c), (a, c, b), (c, b, a)):
        with pytest.raises(SpoolError):
            open_sealed(key, MID, sealed[:1] + b"".join(order))


def test_body_of_another_message_is_refused() -> None:
    key = new_data_key()
    sealed = seal(key, MID, b"secret")
    with pytest.raises(SpoolError):
        open_sealed(key, "01HABCDEFGHJKMNQ", sealed)


def test_wrong_key_is_refused() -> None:
    sealed = seal(new_data_key(), MID, b"secret")
    with pytest.raises(SpoolError):
        open_sealed(new_data_key(), MID, sealed)


def test_key_wrap_round_trip() -> None:
    master, key = new_data_key(), new_data_key()
    wrapped = wrap_key(master, MID, key)
    assert key not in wrapped
    assert unwrap_key(master, MID, wrapped) == key
    assert wrap_key(master, MID, key) != wrapped  # fresh random nonce each time


def test_unwrap_with_another_master_key_is_refused() -> None:
    wrapped = wrap_key(new_data_key(), MID, new_data_key())
    with pytest.raises(SpoolError):
        unwrap_key(new_data_key(), MID, wrapped)


def test_unwrap_for_another_message_is_refused() -> None:
    master = new_data_key()
    wrapped = wrap_key(master, MID, new_data_key())
    with pytest.raises(SpoolError):
        unwrap_key(master, "01HABCDEFGHJKMNQ", wrapped)


def test_damaged_wrapped_key_is_refused() -> None:
    # errors.py: lower-layer exceptions are translated into SpoolError at this boundary.
    master = new_data_key()
    wrapped = wrap_key(master, MID, new_data_key())
    for damaged in (wrapped[:-1], wrapped[:12], wrapped[:3], b"", wrapped[:5] + b"x" + wrapped[6:]):
        with pytest.raises(SpoolError):
            unwrap_key(master, MID, damaged)
