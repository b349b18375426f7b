"""The example plug-in's rules (examples/bsn-guard): the eleven-test, the ways a BSN is
written, numbers that only look like one, and the text inside office documents."""

from __future__ import annotations

import base64
import io
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "bsn-guard"))

from secumail_bsn_guard.bsn import contains_bsn, eleven_test
from secumail_bsn_guard.stage import where_bsn


@pytest.mark.parametrize(("digits", "valid"), [
    ("111222333", True), ("123456782", True), ("012345672", True),
    ("123456789", False), ("000000000", False), ("11122233", False), ("１１１２２２３３３", False),
])
def test_eleven_test(digits: str, valid: bool) -> None:
    assert eleven_test(digits) is valid


@pytest.mark.parametrize(("text", "found"), [
    ("BSN: 111222333.", True),
    ("bsn 1112.22.333 van mevrouw", True),
    ("bsn 1112 22 333", True),
    ("123456789", False),                 # fails the eleven-test
    ("tel. 0612345678", False),           # ten digits
    ("NL91ABNA0417164300", False),        # an IBAN's digits
    ("order 1112223334444", False),       # part of a longer number
    ("1112.22 333", False),               # mixed separators: not a BSN as written
    ("v3.111222333", False),              # part of a version number
])
def test_finding_a_bsn(text: str, found: bool) -> None:
    assert contains_bsn(text) is found


def docx(paragraphs: list[str]) -> bytes:
    runs = "".join(
        "<w:p>" + "".join(f"<w:r><w:t>{chunk}</w:t></w:r>" for chunk in p.split("|")) + "</w:p>"
        for p in paragraphs
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", f"<w:document><w:body>{runs}</w:body></w:document>")
    return buf.getvalue()


def mail(body: str, attachment: bytes | None = None) -> bytes:
    head = b"From: a@hospital.test\r\nTo: b@else.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
    if attachment is None:
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()
    b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        + body.encode() + b"\r\n--b\r\nContent-Type: application/vnd.openxmlformats-officedocument."
        + b'wordprocessingml.document\r\nContent-Disposition: attachment; filename="brief.docx"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n"
    )


def test_where_in_a_message() -> None:
    assert where_bsn(mail("Patient BSN 111222333")) == "body"
    # A Word document whose runs split the number: one number on the page.
    assert where_bsn(mail("zie bijlage", docx(["Mevrouw Jansen", "BSN 1112|2233|3"]))) == "attachment"
    # Paragraphs are not glued together into a number.
    assert where_bsn(mail("zie bijlage", docx(["kamer 1112", "22333"]))) is None
    assert where_bsn(mail("no number here", docx(["nothing"]))) is None
    # Hostile input is not a crash.
    assert where_bsn(mail("x", b"PK\x03\x04 broken")) is None
