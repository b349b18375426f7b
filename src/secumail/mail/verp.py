"""Bounce addresses (VERP): a return path per message and recipient that nobody can forge.

Every message Secumail sends carries, as its envelope sender (RFC 5321 §4.1.1.2, the
reverse-path), `bounce+<message id><tag>@<server.hostname>`. A bounce that arrives later
goes to that address, and the address alone tells which message and which recipient it
is about, whatever the bounce's body says (bounce formats are many and often wrong).

The tag authenticates the pair: an HMAC-SHA256 under a key of this installation over
the message id and the recipient, cut to 20 base32 characters (100 bits). The recipient
itself is not in the address (it may be long or personal); whoever reads a bounce finds
it by computing the tag for each recipient of the message (`recipient_for`). A guessed
or altered address matches no recipient and changes nothing.

The local part is `bounce+` + 16 + 20 = 43 octets, within RFC 5321 §4.5.3.1.1's 64.
Mail servers may change the case of a local part: both halves are read case-insensitively.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from secumail.mail.address import AddressError, normalise_domain
from secumail.mail.ids import is_message_id

PREFIX = "bounce+"
TAG_LENGTH = 20  # base32 characters: 100 bits


def recipient_tag(key: bytes, message_id: str, recipient: str) -> str:
    """The 20-character tag for (message, recipient) under `key` (lower-case base32)."""
    mac = hmac.new(
        key, b"verp\x00" + message_id.encode("ascii") + b"\x00" + _folded(recipient), hashlib.sha256
    ).digest()
    return base64.b32encode(mac).decode("ascii")[:TAG_LENGTH].lower()


def bounce_address(key: bytes, message_id: str, recipient: str, domain: str) -> str:
    """The return path for `recipient`'s copy of message `message_id`."""
    return f"{PREFIX}{message_id}{recipient_tag(key, message_id, recipient)}@{domain}"


def domain_problem(hostname: str) -> str | None:
    """Why bounce addresses cannot be `…@hostname` (None: they can). A return path's
    domain must be a mail domain (RFC 5321 §4.1.2: dot-separated labels; a single label
    such as "localhost" is refused by the receiving side and by our own inbound MX)."""
    text = hostname.rstrip(".")
    if text and "." not in text:
        return f"{hostname!r} has a single label; bounce addresses need a domain name"
    try:
        normalise_domain(text)
    except AddressError as exc:
        return f"{hostname!r} is not a valid domain ({exc})"
    return None


def parse_bounce_local(local_part: str) -> tuple[str, str] | None:
    """(message id, tag) when `local_part` has the shape of a bounce address; None
    otherwise. Shape only: `recipient_for` checks the tag."""
    if not local_part.lower().startswith(PREFIX):
        return None
    rest = local_part[len(PREFIX) :]
    if len(rest) != 16 + TAG_LENGTH:
        return None
    message_id, tag = rest[:16].upper(), rest[16:].lower()
    if not is_message_id(message_id) or not all(c in _B32 for c in tag):
        return None
    return message_id, tag


def recipient_for(key: bytes, message_id: str, tag: str, recipients: Iterable[str]) -> str | None:
    """The recipient of the message whose tag is `tag`; None when none matches (a
    forged, altered or foreign address)."""
    found = None
    for recipient in recipients:
        # Every candidate is compared (in constant time each): no early exit to time.
        if hmac.compare_digest(recipient_tag(key, message_id, recipient), tag.lower()):
            found = recipient
    return found


_B32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _folded(recipient: str) -> bytes:
    """The recipient as compared: the domain's case does not matter (RFC 5321 §2.4);
    the local part's is kept, as the store keeps it."""
    local, at, domain = recipient.rpartition("@")
    return (local + at + domain.lower()).encode("utf-8")
