"""S/MIME v4 signing (RFC 8551 §3.5.3, RFC 1847 §2.1): structure, canonical form, 7-bit.

The signatures themselves are checked by openssl in
tests/integration/test_smime_openssl.py.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs7

from secumail.mail.smime import SmimeError, sign_message
from secumail.pki.ca import CertificateAuthority, IssuedCert

HEAD = (
    b"Received: from client.zorg.test by gw.test; Mon, 6 Jan 2025 10:00:00 +0100\r\n"
    b"From: Jan <jan@zorg.test>\r\n"
    b"To: patient@example.test\r\n"
    b"Subject: Uitslag\r\n"
    b"Date: Mon, 6 Jan 2025 10:00:00 +0100\r\n"
    b"Message-ID: <1@zorg.test>\r\n"
)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> IssuedCert:
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "Zorg")
    return ca.issue_smime("jan@zorg.test")


def sign(message: bytes, signer: IssuedCert) -> bytes:
    return sign_message(message, signer.cert, signer.key, signer.chain)


def parse(signed: bytes) -> EmailMessage:
    msg = email.message_from_bytes(signed, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def text(part: EmailMessage) -> str:
    """Decoded text content (the parser keeps CRLF from a CRLF source)."""
    return part.get_content().replace("\r\n", "\n")


def signed_part(signed: bytes) -> bytes:
    """The exact bytes the signature covers (RFC 1847 §2.1, RFC 2046 §5.1.1)."""
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary
    delimiter = b"\r\n--" + boundary.group(1)
    start = signed.index(delimiter + b"\r\n") + len(delimiter) + 2
    return signed[start : signed.index(delimiter, start)]


def header_names(block: bytes) -> list[bytes]:
    head = block.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":")[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]


# --- structure ------------------------------------------------------------------------


def test_outer_headers_stay_outside_in_order(signer: IssuedCert) -> None:
    message = (
        HEAD + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHallo\r\n"
    )
    signed = sign(message, signer)
    assert header_names(signed) == [
        b"Received",
        b"From",
        b"To",
        b"Subject",
        b"Date",
        b"Message-ID",
        b"MIME-Version",
        b"Content-Type",
    ]
    assert signed.startswith(HEAD)
    assert signed.count(b"MIME-Version:") == 1


def test_python_email_sees_multipart_signed_with_two_parts(signer: IssuedCert) -> None:
    msg = parse(sign(HEAD + b"\r\nHallo\r\n", signer))
    assert msg.get_content_type() == "multipart/signed"
    # RFC 8551 §3.5.3: protocol and micalg parameters.
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    assert msg.get_param("micalg") == "sha-256"
    assert msg["Subject"] == "Uitslag" and msg["From"] == "Jan <jan@zorg.test>"
    parts = list(msg.iter_parts())
    assert len(parts) == 2
    assert parts[0].get_content_type() == "text/plain"
    assert text(parts[0]) == "Hallo\n"
    assert parts[1].get_content_type() == "application/pkcs7-signature"
    assert parts[1].get_filename() == "smime.p7s"
    assert parts[1]["Content-Transfer-Encoding"] == "base64"


def test_first_part_is_the_original_content_byte_for_byte(signer: IssuedCert) -> None:
    content = (
        b"Content-Type: text/plain; charset=us-ascii;\r\n format=flowed\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n\r\nRegel 1\r\nRegel 2  \r\n"
    )
    signed = sign(HEAD + b"MIME-Version: 1.0\r\n" + content, signer)
    assert signed_part(signed) == content


def test_missing_content_type_is_made_explicit(signer: IssuedCert) -> None:
    # RFC 2045 §5.2: the default is text/plain; charset=us-ascii.
    signed = sign(HEAD + b"\r\nHallo\r\n", signer)
    assert signed_part(signed) == b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHallo\r\n"


def test_signature_carries_signer_and_chain(signer: IssuedCert) -> None:
    msg = parse(sign(HEAD + b"\r\nHallo\r\n", signer))
    der = list(msg.iter_parts())[1].get_content()
    certs = pkcs7.load_der_pkcs7_certificates(der)
    assert signer.cert in certs and signer.chain[0] in certs


def test_lf_input_comes_out_crlf_only(signer: IssuedCert) -> None:
    message = HEAD.replace(b"\r\n", b"\n") + b"\nHallo\nwereld\n"
    signed = sign(message, signer)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert b"\r" not in signed.replace(b"\r\n", b"")
    assert signed_part(signed).endswith(b"\r\n\r\nHallo\r\nwereld\r\n")


def test_boundary_does_not_occur_in_the_content(signer: IssuedCert) -> None:
    signed = sign(HEAD + b"\r\n------=_secumail_\r\n", signer)
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary and boundary.group(1) not in signed_part(signed)


def test_message_without_body(signer: IssuedCert) -> None:
    signed = sign(HEAD, signer)
    assert signed_part(signed) == b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    assert len(list(parse(signed).iter_parts())) == 2


# --- 7-bit transport safety (RFC 8551 §3.1.2) -----------------------------------------


def test_8bit_text_is_quoted_printable(signer: IssuedCert) -> None:
    letter = "Beste meneer Müller,\r\nde uitslag is binnen. Groeten, Zoë\r\n"
    message = (
        HEAD
        + (
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        )
        + letter.encode()
    )
    signed = sign(message, signer)
    assert signed.isascii()
    part = signed_part(signed)
    assert part.startswith(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert b"M=C3=BCller" in part
    first = next(parse(signed).iter_parts())
    assert text(first) == letter.replace("\r\n", "\n")


def test_8bit_without_content_type_gets_utf8_charset(signer: IssuedCert) -> None:
    signed = sign(HEAD + b"\r\n" + "Zoë\r\n".encode(), signer)
    assert signed.isascii()
    first = next(parse(signed).iter_parts())
    assert first.get_content_type() == "text/plain"
    assert first.get_param("charset") == "utf-8"
    assert text(first) == "Zoë\n"


def test_8bit_binary_attachment_is_base64(signer: IssuedCert) -> None:
    data = bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") * 4
    message = (
        HEAD
        + (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
        + data
    )
    signed = sign(message, signer)
    assert signed.isascii()
    first = next(parse(signed).iter_parts())
    assert first["Content-Transfer-Encoding"] == "base64"
    assert first.get_content() == data


def test_overlong_line_is_encoded(signer: IssuedCert) -> None:
    # RFC 5322 §2.1.1: lines are at most 998 octets; longer ones get broken in transit.
    line = "x" * 1500
    signed = sign(HEAD + b"Content-Type: text/plain\r\n\r\n" + line.encode() + b"\r\n", signer)
    assert max(len(x) for x in signed.split(b"\r\n")) <= 78
    assert text(next(parse(signed).iter_parts())) == line + "\n"


def test_multipart_only_the_8bit_part_changes(signer: IssuedCert) -> None:
    ascii_part = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n"
    pdf = b"%PDF-1.4\xe2\xe3\xcf\xd3 binary"
    body = (
        b"preamble\r\n--XYZ\r\n"
        + ascii_part
        + b"\r\n--XYZ\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + "<p>Zoë</p>\r\n".encode()
        + b"\r\n--XYZ\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
        + b' filename="u.pdf"\r\n\r\n'
        + pdf
        + b"\r\n--XYZ--\r\nepilogue\r\n"
    )
    message = (
        HEAD + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XYZ"\r\n\r\n' + body
    )
    signed = sign(message, signer)
    assert signed.isascii()
    part = signed_part(signed)
    assert b"\r\n--XYZ\r\n" + ascii_part + b"\r\n--XYZ\r\n" in part
    assert part.startswith(b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\npreamble\r\n')
    inner = list(next(parse(signed).iter_parts()).iter_parts())
    assert [p.get_content_type() for p in inner] == ["text/plain", "text/html", "application/pdf"]
    assert inner[1]["Content-Transfer-Encoding"] == "quoted-printable"
    assert text(inner[1]) == "<p>Zoë</p>\n"
    assert inner[2]["Content-Transfer-Encoding"] == "base64"
    assert inner[2].get_content() == pdf


def test_attached_message_is_made_7bit_inside(signer: IssuedCert) -> None:
    attached = (
        b"From: a@x.test\r\nSubject: fw\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + ("Zoë\r\n".encode())
    )
    body = (
        b"--B\r\nContent-Type: text/plain\r\n\r\nzie bijlage\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + attached + b"\r\n--B--\r\n"
    )
    message = HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body
    signed = sign(message, signer)
    assert signed.isascii()
    # RFC 2046 §5.2.1: message/rfc822 itself stays unencoded; its body is re-encoded.
    assert b"Content-Type: message/rfc822\r\n\r\nFrom: a@x.test\r\n" in signed
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\nZo=C3=AB\r\n" in signed


def test_7bit_message_is_not_re_encoded(signer: IssuedCert) -> None:
    content = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nZo=C3=AB\r\n"
    assert signed_part(sign(HEAD + content, signer)) == content


def test_binary_transfer_encoding_is_refused(signer: IssuedCert) -> None:
    message = (
        HEAD + b"Content-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n\r\n\x89PNG\r\n"
    )
    with pytest.raises(SmimeError, match="binary"):
        sign(message, signer)


def test_multipart_without_boundary_is_refused(signer: IssuedCert) -> None:
    message = HEAD + b"Content-Type: multipart/mixed\r\n\r\n\xff\r\n"
    with pytest.raises(SmimeError, match="boundary"):
        sign(message, signer)


def test_nesting_past_the_limit_is_refused_not_a_recursion_error(signer: IssuedCert) -> None:
    depth = 600
    body = b"--b%d\r\nContent-Type: text/plain\r\n\r\n\xc3\xa9\r\n--b%d--\r\n" % (depth, depth)
    for level in range(depth - 1, 0, -1):
        part = b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level + 1)
        body = b"--b%d\r\n" % level + part + body + b"--b%d--\r\n" % level
    message = HEAD + b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" + body
    with pytest.raises(SmimeError, match="nested deeper"):
        sign(message, signer)


def test_malformed_header_is_refused(signer: IssuedCert) -> None:
    with pytest.raises(SmimeError, match="header"):
        sign(b" continuation first\r\nFrom: a@x.test\r\n\r\nx\r\n", signer)


def test_ec_key_signs_too(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "Zorg")
    issued = ca.issue_smime("jan@zorg.test", key_type="ec")
    signed = sign_message(HEAD + b"\r\nHallo\r\n", issued.cert, issued.key, issued.chain)
    assert parse(signed).get_content_type() == "multipart/signed"
