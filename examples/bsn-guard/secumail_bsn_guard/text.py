"""The readable text of a message: its text parts and the text inside office documents.

Hostile input: every part and document is size-capped, archives are read member by member
with the bytes counted (Secumail's `scan` stage has refused bombs before this stage runs,
but a plug-in must not rely on what runs before it). Formats read: text/* parts (HTML tags
left in: digits are digits), and the XML inside OOXML (docx, xlsx, pptx) and OpenDocument
(odt, ods, odp) files. Anything else (PDF, images) is not read: this plug-in is an example,
not a complete DLP product.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import re
import zipfile
from collections.abc import Iterator
from email.message import Message

MAX_TEXT = 20 * 1024 * 1024  # characters read in all
MAX_MEMBER = 10 * 1024 * 1024  # bytes of one XML member
ZIP_MAGIC = b"PK\x03\x04"
_XML_PARTS = re.compile(r"^(word/|xl/|ppt/)[^/]+.*\.xml$|^content\.xml$")
_TAG = re.compile(r"<[^>]{0,2000}>")
# Tags that end a paragraph, a cell or a line: they separate what they enclose. Every other
# tag (a run of formatting) does not: "<w:t>1112</w:t><w:t>22333</w:t>" is one number.
_BREAK = re.compile(
    r"</?(?:[\w-]+:)?(?:p|h|tc|tr|br|tab|c|v|si|row|table-cell|table-row|line-break|s)(?:\s[^>]{0,2000})?/?>"
)


def texts(message: bytes) -> Iterator[tuple[str, str]]:
    """(where, text): "body" for text parts, "attachment" for documents."""
    root = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    budget = MAX_TEXT
    stack: list[Message] = [root]
    while stack and budget > 0:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
            continue
        try:
            data = part.get_payload(decode=True)
        except (ValueError, TypeError, AssertionError):
            continue
        if not isinstance(data, bytes):
            continue
        if part.get_content_maintype() == "text":
            text = data[:budget].decode(part.get_content_charset() or "utf-8", "replace")
            budget -= len(text)
            yield ("attachment" if part.get_filename() else "body"), text
        elif data.startswith(ZIP_MAGIC):
            for text in _document_text(data, budget):
                budget -= len(text)
                yield "attachment", text


def _document_text(data: bytes, budget: int) -> Iterator[str]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in archive.infolist() if _XML_PARTS.match(i.filename)]
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    for info in members[:200]:
        if budget <= 0:
            return
        try:
            with archive.open(info) as member:
                raw = member.read(min(MAX_MEMBER, budget))
        except (zipfile.BadZipFile, ValueError, OSError, RuntimeError, NotImplementedError):
            continue
        text = _TAG.sub("", _BREAK.sub(" ", raw.decode("utf-8", "replace")))
        budget -= len(text)
        yield text
