"""Reading the header section of a message (RFC 5322 §2.2, §3.6), strictly.

The standard library's `email` package is lenient where a gateway must not be: it
returns only the first of several From fields (DKIM signs the last) and its address
parsers disagree on crafted input (CVE-2023-27043). The sender check uses these
functions instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secumail.mail.address import Address, AddressError, normalise_domain, parse_address
from secumail.mail.encoded_words import breaks_lines, display_text

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
            last_name, last_value = fields[-1]
            fields[-1] = (last_name, last_value + " " + _decode(line).strip())
            continue
        raw_name, sep, raw_value = line.partition(b":")
        if not sep or not _FIELD_NAME.match(raw_name):
            raise HeaderError("malformed header field")
        fields.append((raw_name.decode("ascii"), _decode(raw_value).strip()))
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
    try:
        return mailbox_of(values[0])
    except HeaderError as exc:
        raise HeaderError(f"From {exc}") from exc


# RFC 5322 §3.6.2, §3.6.6: the fields a reader is shown as who sent the message.
# Sender and Resent-Sender hold one mailbox; From and Resent-From a list (From is
# further held to exactly one mailbox by `single_from_address`).
SINGLE_MAILBOX_ORIGINATORS = ("Sender", "Resent-Sender")
LIST_ORIGINATORS = ("From", "Resent-From")
_ORIGINATORS = {f.lower(): f for f in (*LIST_ORIGINATORS, *SINGLE_MAILBOX_ORIGINATORS)}
_ADDRESS_IN_TEXT = re.compile(r"@\s*([^\s@<>\"'(),;:\[\]]+)")


def injected_field(section: HeaderSection) -> str | None:
    """The name of the first field whose value, raw or RFC 2047-decoded, holds CR, LF,
    NUL or another line break (header injection, CVE-2024-6923 class); else None."""
    for name, value in section.fields:
        if breaks_lines(value):
            return name
    return None


def originator_domains(
    section: HeaderSection, author: Address | None = None
) -> list[tuple[str, str]]:
    """(field, domain) for every domain an originator field shows a reader.

    That is the domain of each address of From, Sender, Resent-From and Resent-Sender,
    and of each address written into their display names or comments (after RFC 2047
    decoding): `"boss@other.test" <me@mine.test>` shows other.test to the reader. Raises
    HeaderError for a field that is not a valid mailbox (list), or a second Sender.
    `author`: the From mailbox, when `single_from_address` already read it (not read twice).
    """
    found: list[tuple[str, str]] = []
    senders = 0
    for name, value in section.fields:
        field = _ORIGINATORS.get(name.lower())
        if field is None:
            continue
        senders += field == "Sender"
        if senders > 1:
            raise HeaderError("message must have at most one Sender header field")
        try:
            if field == "From" and author is not None:
                mailboxes = [("", author)]
            elif field in SINGLE_MAILBOX_ORIGINATORS:
                mailboxes = [named_mailbox_of(value)]
            else:
                mailboxes = mailbox_list_of(value)
        except HeaderError as exc:
            raise HeaderError(f"{field} {exc}") from exc
        found.extend((field, address.domain) for _display, address in mailboxes)
        if value.count("@") > len(mailboxes) or "=?" in value:
            # Display names and comments, decoded, as a mail client may show them.
            found.extend((field, d) for d in _domains_in_text(display_text(value)))
    return found


def _domains_in_text(text: str) -> list[str]:
    domains = []
    for m in _ADDRESS_IN_TEXT.finditer(text):
        try:
            domains.append(normalise_domain(m.group(1).rstrip(".")))
        except AddressError:
            continue  # not a host name: no domain for a reader to believe
    return domains


def mailbox_of(value: str) -> Address:
    """The single addr-spec in a From value: `Name <a@b>` or `a@b` (comments dropped).

    Structure is read outside quoted strings only, so a display name such as
    `"Doe, John <x@evil.test>"` cannot pose as the address or as a second mailbox.
    """
    return named_mailbox_of(value)[1]


def named_mailbox_of(value: str) -> tuple[str, Address]:
    """(display name as written, address) of a single mailbox (RFC 5322 §3.4)."""
    text = _strip_comments(value)
    specials = _structure(text)
    kinds = "".join(c for _, c in specials)
    if "," in kinds or ";" in kinds or ":" in kinds:
        raise HeaderError("must name exactly one mailbox (no lists or groups)")
    if kinds == "<>":
        lt, gt = specials[0][0], specials[1][0]
        if text[gt + 1 :].strip():
            raise HeaderError("text after the address")
        display, spec = text[:lt].strip(), text[lt + 1 : gt].strip()
    elif kinds == "":
        display, spec = "", text.strip()
        if re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', "", spec)):
            raise HeaderError("address does not parse")
    else:
        raise HeaderError("must hold one address in <...>")
    try:
        return display, parse_address(spec, utf8=not spec.isascii())
    except AddressError as exc:
        raise HeaderError(f"address does not parse: {exc}") from exc


def mailbox_list_of(value: str) -> list[tuple[str, Address]]:
    """Each (display name, address) of a mailbox-list (RFC 5322 §3.4; no groups)."""
    text = _strip_comments(value)
    cuts = [i for i, c in _structure(text) if c == ","]
    parts = [text[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(text)], strict=True)]
    if any(not p.strip() for p in parts):
        raise HeaderError("empty entry in an address list")
    return [named_mailbox_of(p) for p in parts]


def _structure(text: str) -> list[tuple[int, str]]:
    """Positions of the specials that give an address field its structure, outside
    quoted strings and (for commas) outside angle brackets."""
    if '"' not in text and "\\" not in text:
        # Nothing quoted: the specials are where they appear.
        marks = [(m.start(), m.group()) for m in _SPECIALS.finditer(text)]
        depth = 0
        kept = []
        for i, c in marks:
            depth += {"<": 1, ">": -1}.get(c, 0)
            if c != "," or depth <= 0:
                kept.append((i, c))
        return kept
    specials: list[tuple[int, str]] = []
    in_quote = escaped = False
    depth = 0
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif not in_quote and c in "<>,;:":
            depth += {"<": 1, ">": -1}.get(c, 0)
            if c != "," or depth <= 0:
                specials.append((i, c))
    return specials


_SPECIALS = re.compile(r"[<>,;:]")


def _strip_comments(value: str) -> str:
    if "(" not in value and ")" not in value and '"' not in value:
        return value  # no comment to strip, no quoted string to keep whole
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
        raise HeaderError("unbalanced comment or quote")
    return "".join(out)
