"""Reading the header section of a message (RFC 5322 §2.2, §3.6), strictly.

The standard library's `email` package is lenient where a gateway must not be: it
returns only the first of several From fields (DKIM signs the last) and its address
parsers disagree on crafted input (CVE-2023-27043). The sender check uses these
functions instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secumail.mail.address import Address, AddressError, parse_address

_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")


class HeaderError(ValueError):
    """The header section is malformed in a way that matters for a security decision."""


@dataclass(frozen=True, slots=True)
class HeaderSection:
    """Fields in order as (name, unfolded raw value) and where the body starts."""

    fields: list[tuple[str, str]]
    body_offset: int

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.fields if n.lower() == lname]

    def first(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None


def parse_header_section(message: bytes) -> HeaderSection:
    """Split off and unfold the header section of a CRLF message."""
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        head, body_offset = b"", 2
    elif end < 0:
        head, body_offset = message, len(message)
    else:
        head, body_offset = message[: end + 2], end + 4
    fields: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise HeaderError("header section starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + " " + _decode(line).strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _FIELD_NAME.match(name):
            raise HeaderError("malformed header field")
        fields.append((name.decode("ascii"), _decode(value).strip()))
    return HeaderSection(fields, body_offset)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def single_from_address(section: HeaderSection) -> Address:
    """The one author mailbox of the message (RFC 5322 §3.6: exactly one From field).

    Raises HeaderError when there are zero or several From fields, or a From field
    naming more than one mailbox, or an address that does not parse.
    """
    values = section.get_all("From")
    if len(values) != 1:
        raise HeaderError(f"message must have exactly one From header field, found {len(values)}")
    return mailbox_of(values[0])


def mailbox_of(value: str) -> Address:
    """The single addr-spec in a From value: `Name <a@b>` or `a@b` (comments dropped).

    Structure is read outside quoted strings only, so a display name such as
    `"Doe, John <x@evil.test>"` cannot pose as the address or as a second mailbox.
    """
    text = _strip_comments(value)
    specials: list[tuple[int, str]] = []
    in_quote = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif not in_quote and c in "<>,;:":
            specials.append((i, c))
    kinds = "".join(c for _, c in specials)
    if "," in kinds or ";" in kinds or ":" in kinds:
        raise HeaderError("From must name exactly one mailbox (no lists or groups)")
    if kinds == "<>":
        lt, gt = specials[0][0], specials[1][0]
        if text[gt + 1 :].strip():
            raise HeaderError("text after the address in From")
        spec = text[lt + 1 : gt].strip()
    elif kinds == "":
        spec = text.strip()
        if re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', "", spec)):
            raise HeaderError("From address does not parse")
    else:
        raise HeaderError("From must hold one address in <...>")
    try:
        return parse_address(spec, utf8=not spec.isascii())
    except AddressError as exc:
        raise HeaderError(f"From address does not parse: {exc}") from exc


def _strip_comments(value: str) -> str:
    out: list[str] = []
    depth = 0
    in_quote = False
    escaped = False
    for c in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(c)
            continue
        if c == "\\":
            escaped = True
            if depth == 0:
                out.append(c)
            continue
        if in_quote:
            out.append(c)
            if c == '"':
                in_quote = False
            continue
        if c == "(":
            depth += 1
            continue
        if c == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            if c == '"':
                in_quote = True
            out.append(c)
    if depth or in_quote:
        raise HeaderError("unbalanced comment or quote in From")
    return "".join(out)
