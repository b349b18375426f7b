"""S/MIME v4 signing (RFC 8551 §3.5.3): a message in, the same message signed out.

The result keeps the message's own header fields (From, To, Subject, Date, Message-ID,
trace fields, ... in their order) outside, and moves its content into the first part of
a multipart/signed entity (RFC 1847 §2.1):

    <original non-Content-* fields>
    MIME-Version: 1.0
    Content-Type: multipart/signed; protocol="application/pkcs7-signature";
     micalg=sha-256; boundary="..."

    --boundary
    <original Content-* fields>          <- the signed bytes: this part, headers
                                            included, up to the CRLF before the
    <original body, made 7-bit safe>        next delimiter (RFC 2046 §5.1.1)
    --boundary
    Content-Type: application/pkcs7-signature; name=smime.p7s
    ...  base64 detached CMS SignedData (signing time, signer cert and chain)
    --boundary--

RFC 8551 §3.1.1: the signed part is canonical, CRLF line ends. §3.1.2: it must survive
any transport unchanged, so 8-bit octets (and lines over 998 octets) are re-encoded:
text/* as quoted-printable, anything else as base64, recursing into multipart/* and
message/rfc822 so only the parts that need it change. Content-* header fields with raw
UTF-8 (RFC 6532) are kept as they are.

Pure: takes key and certificate objects, returns bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

_LINE_END = re.compile(rb"\r\n|\r|\n")
_EIGHT_BIT_OR_NUL = re.compile(rb"[\x80-\xff\x00]")
_LONG_LINE = re.compile(rb"[^\r\n]{999,}")  # RFC 5322 §2.1.1: 998 octets + CRLF
_PARAM = re.compile(r""";\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]+)""")
_IDENTITY_CTE = (b"", b"7bit", b"8bit", b"binary")
# Nested multiparts and attached messages re-encoded at most this deep: the walk is
# recursive, and a message nested hundreds deep must fail as SmimeError, not as a
# RecursionError that crashes the stage on every retry.
MAX_NESTING = 50


class SmimeError(ValueError):
    """The message cannot be signed as it is (malformed MIME structure)."""


def sign_message(
    message: bytes,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """Sign `message` as multipart/signed with a detached CMS signature (SHA-256).

    `chain` holds the CA certificates to include (issuing CA first; the root may be left
    out). Returns the signed message with CRLF line ends.
    """
    message = canonicalize(message)
    fields, body = _split_entity(message)
    outer = [
        f for f in fields if not _name(f).startswith(b"content-") and _name(f) != b"mime-version"
    ]
    inner = [f for f in fields if _name(f).startswith(b"content-")]
    if _field(inner, b"content-type") is None:
        # RFC 2045 §5.2: the default; say it out loud now it sits inside a multipart.
        inner.insert(0, b"Content-Type: text/plain; charset=" + _guess_charset(body) + b"\r\n")
    inner, body = _seven_bit(inner, body, b"text/plain")
    part = b"".join(inner) + b"\r\n" + body

    signature = pkcs7.PKCS7SignatureBuilder().set_data(part).add_signer(cert, key, hashes.SHA256())
    for ca in chain:
        signature = signature.add_certificate(ca)
    # Binary: the part is canonical already and must be signed byte for byte.
    der = signature.sign(
        serialization.Encoding.DER,
        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
    )

    boundary = _boundary(part)
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return b"".join(
        [
            *outer,
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n',
            b' micalg=sha-256; boundary="' + boundary + b'"\r\n',
            b"\r\n",
            b"This is a cryptographically signed message in MIME format.\r\n",
            b"\r\n--" + boundary + b"\r\n",
            part,
            b"\r\n--" + boundary + b"\r\n",
            b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; filename=smime.p7s\r\n",
            b"\r\n",
            b64,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )


def canonicalize(data: bytes) -> bytes:
    """Every line end as CRLF (RFC 8551 §3.1.1)."""
    return _LINE_END.sub(b"\r\n", data)


# --- entities -------------------------------------------------------------------------


def _split_entity(entity: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (raw, folding kept, each ending in CRLF) and body of a CRLF entity.

    An entity without a blank line is all header.
    """
    if entity.startswith(b"\r\n"):
        return [], entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        head, body = (entity if entity.endswith(b"\r\n") else entity + b"\r\n"), b""
    else:
        head, body = entity[: end + 2], entity[end + 4 :]
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise SmimeError("header section starts with a continuation line")
            fields[-1] += line
        elif b":" not in line:
            raise SmimeError(f"malformed header line {line[:40]!r}")
        else:
            fields.append(line)
    return fields, body


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _field(fields: list[bytes], name: bytes) -> bytes | None:
    for f in fields:
        if _name(f) == name:
            return f
    return None


def _value(field: bytes) -> str:
    raw = field.split(b":", 1)[1]
    return _LINE_END.sub(b"", raw).decode("latin-1").strip()


def _content_type(fields: list[bytes], default: bytes) -> tuple[bytes, dict[str, str]]:
    """Media type (lower-case) and parameters (names lower-case, values unquoted)."""
    f = _field(fields, b"content-type")
    if f is None:
        return default, {}
    value = _value(f)
    media = value.split(";", 1)[0].strip().lower()
    if "/" not in media:
        return default, {}  # RFC 2045 §5.2: an invalid Content-Type means the default
    params: dict[str, str] = {}
    for m in _PARAM.finditer(value[len(value.split(";", 1)[0]) :]):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params.setdefault(m.group(1).lower(), v)
    return media.encode("latin-1"), params


def _needs_encoding(data: bytes) -> bool:
    return bool(_EIGHT_BIT_OR_NUL.search(data) or _LONG_LINE.search(data))


def _seven_bit(
    fields: list[bytes], body: bytes, default_type: bytes, depth: int = 0
) -> tuple[list[bytes], bytes]:
    """Make an entity's body transport-safe (RFC 8551 §3.1.2), changing as little as can be."""
    if not _needs_encoding(body):
        return fields, body
    if depth > MAX_NESTING:
        raise SmimeError(f"MIME structure nested deeper than {MAX_NESTING} levels")
    media, params = _content_type(fields, default_type)
    cte_field = _field(fields, b"content-transfer-encoding")
    cte = _value(cte_field).lower().encode() if cte_field else b""

    if media.startswith(b"multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise SmimeError("multipart entity without a boundary parameter")
        child_default = b"message/rfc822" if media == b"multipart/digest" else b"text/plain"
        return fields, _seven_bit_multipart(
            body, boundary.encode("latin-1"), child_default, depth + 1
        )

    if media == b"message/rfc822" and cte in _IDENTITY_CTE:
        # RFC 2046 §5.2.1: message/rfc822 is never encoded itself; its content is.
        # (message/global may be, RFC 6532 §3.5: it falls through to base64 below.)
        inner_fields, inner_body = _split_entity(body)
        if any(_EIGHT_BIT_OR_NUL.search(f) for f in inner_fields):
            raise SmimeError("an attached message has 8-bit header fields; cannot make it 7-bit")
        inner_fields, inner_body = _seven_bit(inner_fields, inner_body, b"text/plain", depth + 1)
        return fields, b"".join(inner_fields) + b"\r\n" + inner_body

    if cte in _IDENTITY_CTE:
        if cte == b"binary":
            raise SmimeError("Content-Transfer-Encoding binary cannot be signed for SMTP")
        raw = body
    elif cte == b"quoted-printable":
        raw = binascii.a2b_qp(body)  # stray 8-bit octets survive decoding as they are
    else:
        raise SmimeError(f"{cte.decode('latin-1')}-encoded body holds 8-bit octets or long lines")

    if media.startswith(b"text/"):
        # Text is canonical CRLF; b2a_qp keeps CRLF line breaks as hard breaks.
        encoded, new_cte = canonicalize(binascii.b2a_qp(raw, istext=True)), b"quoted-printable"
    else:
        encoded, new_cte = base64.encodebytes(raw).replace(b"\n", b"\r\n"), b"base64"
    header = b"Content-Transfer-Encoding: " + new_cte + b"\r\n"
    kept = [f for f in fields if _name(f) != b"content-transfer-encoding"]
    return [*kept, header], encoded


def _seven_bit_multipart(body: bytes, boundary: bytes, child_default: bytes, depth: int) -> bytes:
    """Re-encode the parts of a multipart body that need it; keep delimiters byte-exact."""
    # RFC 2046 §5.1.1: the CRLF before "--boundary" belongs to the delimiter.
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r\n|\Z)")
    matches = list(delimiter.finditer(body))
    if not matches:
        raise SmimeError("multipart body without its boundary delimiter")
    out = [_drop_if_unsafe(body[: matches[0].start()])]  # preamble: ignored by readers
    for i, m in enumerate(matches):
        out.append(m.group(0))
        if m.group(1):  # close delimiter: the rest is epilogue
            out.append(_drop_if_unsafe(body[m.end() :]))
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        segment = body[m.end() : end]
        if _needs_encoding(segment):
            part_fields, part_body = _split_entity(segment)
            part_fields, part_body = _seven_bit(part_fields, part_body, child_default, depth)
            segment = b"".join(part_fields) + b"\r\n" + part_body
        out.append(segment)
    return b"".join(out)


def _drop_if_unsafe(text: bytes) -> bytes:
    return b"" if _needs_encoding(text) else text


def _guess_charset(body: bytes) -> bytes:
    if body.isascii():
        return b"us-ascii"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return b"unknown-8bit"  # RFC 1428
    return b"utf-8"


def _boundary(part: bytes) -> bytes:
    while True:
        boundary = b"----=_secumail_" + secrets.token_hex(12).encode()
        if boundary not in part:
            return boundary
