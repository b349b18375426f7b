"""What an Idempotency-Key stands for: the digest of the request it was first used with.

A retry is the same request when it means the same thing, not when it has the same bytes:
a client library that re-serialises its JSON (another key order, other white space) on
retry must get the first answer back, not "used for another request". So JSON is
compared in a canonical form (parsed, keys sorted, no white space, RFC 8785 in spirit);
a MIME message (message/rfc822) is compared byte for byte, since its bytes are what is
signed and sent.
"""

from __future__ import annotations

import hashlib
import json


def _sha256(ctype: str, body: bytes) -> str:
    return hashlib.sha256(ctype.encode() + b"\0" + body).hexdigest()


def canonical_body(ctype: str, raw: bytes) -> bytes:
    """The request body as compared between retries."""
    if ctype != "application/json":
        return raw
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON (the request is refused anyway): its bytes
        return raw
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_digest(ctype: str, raw: bytes) -> str:
    return _sha256(ctype, canonical_body(ctype, raw))


def matches(stored: str, ctype: str, raw: bytes) -> bool:
    """Whether a retry is the request that `stored` (its digest) was made for; keys
    stored before the canonical form (a digest of the raw bytes) still match their
    byte-identical retries."""
    return stored in (request_digest(ctype, raw), _sha256(ctype, raw))
