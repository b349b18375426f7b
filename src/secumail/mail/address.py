"""Envelope addresses (RFC 5321 §4.1.2 Mailbox, RFC 6531 for UTF-8)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

_DOT_ATOM_ASCII = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5321 §4.1.2: QcontentSMTP = qtextSMTP / quoted-pairSMTP — printable ASCII but '"'
# and '\', or '\' before printable ASCII; no control characters. RFC 6531 §3.3 adds
# UTF8-non-ascii to qtextSMTP (allowed below, refused without SMTPUTF8 further on).
_QUOTED_CONTENT = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x20-\x7e])*')


class AddressError(ValueError):
    """An address that is not a valid RFC 5321 mailbox."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: local part as given, domain normalised to lower-case A-labels."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return self.local.isascii()

    def is_mailbox(self, local_part: str, domain: str) -> bool:
        """Whether this is ``local_part@domain``: the local part compared case-insensitively
        (as the gateway's own service addresses are), the domain as normalised. An empty
        ``local_part`` (a service turned off) matches nothing."""
        return bool(local_part) and self.domain == domain and self.local.lower() == local_part.lower()


def normalise_domain(domain: str) -> str:
    """Lower-case A-label form of a domain; raises AddressError when it is not a host name."""
    d = domain.strip().rstrip(".")
    if not d or len(d) > 253:
        raise AddressError(f"invalid domain {domain!r}")
    if not d.isascii():
        # IDNA2008 with UTS #46 mapping (RFC 5891), not Python's IDNA2003 codec, which
        # maps "ß" to "ss" and so names a different domain.
        try:
            d = idna.encode(d, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise AddressError(f"invalid domain {domain!r}: {exc}") from exc
    d = d.lower()
    labels = d.split(".")
    if labels[-1].isdigit():
        # RFC 3696 §2, RFC 1123 §2.1: a top-level label is never all-numeric; an address
        # is written as a literal, [127.0.0.1], which Secumail does not deliver to.
        raise AddressError(f"invalid domain {domain!r}: a host name, not an IP address")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"invalid domain {domain!r}")
    return d


def parse_address(text: str, *, utf8: bool = False) -> Address:
    """Parse `local@domain` (no angle brackets). UTF-8 local parts only when `utf8`."""
    if len(text) > 254 or "@" not in text:
        raise AddressError(f"invalid address {text!r}")
    local, _, domain = text.rpartition("@")
    if not local or len(local.encode("utf-8")) > 64:
        raise AddressError(f"invalid local part in {text!r}")
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        inner = local[1:-1]
        if not _QUOTED_CONTENT.fullmatch(inner):
            raise AddressError(f"invalid quoted local part in {text!r}")
        if not utf8 and not inner.isascii():
            # RFC 5321 §4.1.2 qtextSMTP is US-ASCII; UTF-8 only under RFC 6531.
            raise AddressError(f"non-ASCII local part needs SMTPUTF8: {text!r}")
    elif not _DOT_ATOM_ASCII.match(local) and not (
        utf8 and not local.isascii() and _utf8_dot_atom(local)
    ):
        raise AddressError(f"invalid local part in {text!r}")
    if not utf8 and not domain.isascii():
        raise AddressError(f"non-ASCII domain needs SMTPUTF8: {text!r}")
    return Address(local, normalise_domain(domain))


def _utf8_dot_atom(local: str) -> bool:
    # RFC 6531 §3.3: atext extended with UTF8-non-ascii.
    return all(
        part and all(c.isalnum() or c in "!#$%&'*+/=?^_`{|}~-" or ord(c) > 127 for c in part)
        for part in local.split(".")
    )
