"""Content limits (mail/content_limits.py): messages built to exhaust the scanners or the
gateway — deep MIME nesting, endless parts, header floods, archives in archives, zip and
gzip bombs, encrypted archives — are caught with a reason; ordinary mail passes."""

from __future__ import annotations

import base64
import gzip
import io
import time
import zipfile

import pytest

from secumail.mail.content_limits import ContentLimits, check_content

LIMITS = ContentLimits(
    max_header_fields=50,
    max_mime_depth=5,
    max_mime_parts=20,
    max_archive_depth=3,
    max_inflated_bytes=10 * 1024 * 1024,
)
HEAD = b"From: alice@hospital.test\r\nTo: bob@clinic.test\r\nSubject: x\r\n"


def zipped(name: str, data: bytes, *, encrypted: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    out = bytearray(buf.getvalue())
    if encrypted:
        # The flag an encrypting zip tool sets (general purpose bit 0, APPNOTE 4.4.4), in
        # the local header (offset 6) and the central directory entry (offset 8).
        out[6] |= 0x1
        cd = out.rfind(b"PK\x01\x02")
        out[cd + 8] |= 0x1
    return bytes(out)


def with_attachment(data: bytes, ctype: bytes = b"application/zip") -> bytes:
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        HEAD
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        + b"--b\r\nContent-Type: " + ctype + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b64 + b"--b--\r\n"
    )


def nested_multiparts(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for i in range(depth):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            + body
            + f"\r\n--b{i}--\r\n".encode()
        )
    return HEAD + b"MIME-Version: 1.0\r\n" + body


def test_ordinary_mail_passes() -> None:
    assert check_content(HEAD + b"\r\nDear Mrs. Jansen\r\n", LIMITS) is None
    report = zipped("report.pdf", b"%PDF-1.7 " + bytes(200_000))
    assert check_content(with_attachment(report), LIMITS) is None
    assert check_content(with_attachment(zipped("inner.zip", report)), LIMITS) is None
    assert check_content(nested_multiparts(4), LIMITS) is None


def test_header_flood() -> None:
    flood = HEAD + b"".join(b"X-H: %d\r\n" % i for i in range(60)) + b"\r\nbody\r\n"
    breach = check_content(flood, LIMITS)
    assert breach is not None and breach.limit == "header_fields"
    assert "63 header fields" in breach.reason


@pytest.mark.parametrize("depth", [6, 200, 5000])
def test_mime_nesting_bomb(depth: int) -> None:
    started = time.process_time()
    breach = check_content(nested_multiparts(depth), LIMITS)
    assert breach is not None and breach.limit == "mime_depth"
    assert "5 levels" in breach.reason
    assert time.process_time() - started < 30  # bounded work, not a hang (a generous guard)


def test_too_many_parts() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(30))
    message = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    breach = check_content(message, LIMITS)
    assert breach is not None and breach.limit == "mime_parts"


def test_archives_nested_too_deep() -> None:
    data = b"harmless"
    for i in range(4):
        data = zipped(f"layer{i}.zip", data)
    breach = check_content(with_attachment(data), LIMITS)
    assert breach is not None and breach.limit == "archive_depth"
    # A gzip inside zips counts as a level too.
    data = gzip.compress(b"x")
    for i in range(3):
        data = zipped(f"layer{i}", data)
    assert check_content(with_attachment(data), LIMITS).limit == "archive_depth"  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["zip", "gzip", "zip in zip"])
def test_bombs_stop_at_the_cap(kind: str) -> None:
    zeros = bytes(64 * 1024 * 1024)
    bomb = {
        "zip": lambda: zipped("zeros", zeros),
        "gzip": lambda: gzip.compress(zeros, 9),
        "zip in zip": lambda: zipped("bomb.zip", zipped("zeros", zeros)),
    }[kind]()
    assert len(bomb) < 200_000
    breach = check_content(with_attachment(bomb), LIMITS)
    assert breach is not None and breach.limit == "inflated_size"
    assert "10 MiB" in breach.reason


def test_a_zip_that_lies_about_its_sizes_is_counted_as_it_inflates() -> None:
    bomb = bytearray(zipped("zeros", bytes(20 * 1024 * 1024)))
    # Claim 1 KiB uncompressed in the central directory (offset 24 of the entry).
    cd = bomb.rfind(b"PK\x01\x02")
    bomb[cd + 24 : cd + 28] = (1024).to_bytes(4, "little")
    breach = check_content(with_attachment(bytes(bomb)), LIMITS)
    # Either the lie is caught by zipfile (not readable: the scanners get the bytes) or the
    # inflation is counted; never more than the cap is inflated.
    assert breach is None or breach.limit == "inflated_size"


def test_encrypted_archives_when_asked() -> None:
    locked = with_attachment(zipped("secret.pdf", b"%PDF", encrypted=True))
    assert check_content(locked, LIMITS) is None
    refusing = ContentLimits(refuse_encrypted_archives=True)
    breach = check_content(locked, refusing)
    assert breach is not None and breach.limit == "encrypted_archive"


def test_garbage_is_not_a_crash() -> None:
    for junk in (b"", b"\r\n\r\n", HEAD + b"Content-Type: multipart/mixed\r\n\r\n--\r\n",
                 with_attachment(b"PK\x03\x04 not really a zip"), with_attachment(b"\x1f\x8b broken gzip"),
                 HEAD + b"Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64"):
        assert check_content(junk, LIMITS) is None
