"""DKIM signing (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463), sans-I/O.

`sign` takes a CRLF message and a list of `DkimKey` and returns the ``DKIM-Signature``
header fields to prepend, one per key, in the order given. Canonicalization is
relaxed/relaxed; the body hash covers the whole body (no ``l=``) and is computed once for
all keys. Headers named in ``oversign`` get one extra ``h=`` entry each, so a field added
after signing (a second From, a Cc that was absent) breaks the signature (§8.15).

Keys are `cryptography` private-key objects; `key_to_pem` / `key_from_pem` move them in
and out of unencrypted PKCS#8 (the caller encrypts at rest). `dns_record` gives the TXT
record to publish and `record_matches` checks a published one. Verification is not done
here: the tests check every signature with dkimpy and OpenDKIM.

Errors: `DkimError` (a ValueError) for an unusable key, record or message.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from secumail.mail.address import AddressError, normalise_domain

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
RSA_BITS = 2048
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers need not accept smaller keys

# RFC 6376 §5.4.1: fields worth signing. Never Received/Return-Path (changed in transit).
DEFAULT_HEADERS: tuple[str, ...] = (
    "From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
    "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID",
    "Content-Description", "In-Reply-To", "References", "List-Id", "List-Unsubscribe",
    "List-Unsubscribe-Post",
)  # fmt: skip
# RFC 6376 §8.15: one extra h= entry per name, so an added field of that name breaks it.
OVERSIGN: tuple[str, ...] = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version",
    "Content-Type",
)  # fmt: skip

_FOLD_WIDTH = 76
_B64_CHUNK = 70
_SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_WSP_RUN = re.compile(rb"[ \t]+")
_TAB_TO_SP = bytes.maketrans(b"\t", b" ")
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 §3.6.8 ftext
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class DkimError(ValueError):
    """A key, DNS record or message that DKIM signing cannot use."""


@dataclass(frozen=True)
class DkimKey:
    """A signing key and where its public half is published: ``<selector>._domainkey.<domain>``."""

    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key: PrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "domain", normalise_domain(self.domain))  # A-labels
        except AddressError as exc:
            raise DkimError(f"invalid signing domain {self.domain!r}") from exc
        if not _SELECTOR.match(self.selector):  # RFC 6376 §3.1: selector = sub-domain labels
            raise DkimError(f"invalid selector {self.selector!r}")
        if self.algorithm == RSA_SHA256:
            if not isinstance(self.private_key, rsa.RSAPrivateKey):
                raise DkimError("rsa-sha256 needs an RSA private key")
            if self.private_key.key_size < MIN_RSA_BITS:
                raise DkimError(f"RSA key of {self.private_key.key_size} bits is too small")
        elif self.algorithm == ED25519_SHA256:
            if not isinstance(self.private_key, ed25519.Ed25519PrivateKey):
                raise DkimError("ed25519-sha256 needs an Ed25519 private key")
        else:
            raise DkimError(f"unknown DKIM algorithm {self.algorithm!r}")

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


# -- keys and DNS records ------------------------------------------------------------


def generate_rsa(domain: str, selector: str) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return DkimKey(domain, selector, RSA_SHA256, key)


def generate_ed25519(domain: str, selector: str) -> DkimKey:
    return DkimKey(domain, selector, ED25519_SHA256, ed25519.Ed25519PrivateKey.generate())


def key_to_pem(key: DkimKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(domain: str, selector: str, algorithm: str, pem: bytes) -> DkimKey:
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"unreadable DKIM private key: {exc}") from exc
    if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimError(f"unsupported DKIM key type {type(private).__name__}")
    return DkimKey(domain, selector, algorithm, private)


def _public_forms(key: DkimKey) -> tuple[str, bytes, set[bytes]]:
    """The k= value, the p= bytes to publish, and every p= form that names this key."""
    public = key.private_key.public_key()
    der = serialization.Encoding.DER
    if isinstance(public, ed25519.Ed25519PublicKey):
        # RFC 8463 §4.2: p= is the raw 32-byte public key, not a SubjectPublicKeyInfo
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", raw, {raw}
    spki = public.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)
    # RFC 6376 §3.6.1 (erratum 3017): SPKI is what is published; accept bare RSAPublicKey too
    return "rsa", spki, {spki, public.public_bytes(der, serialization.PublicFormat.PKCS1)}


def dns_record(key: DkimKey) -> tuple[str, str]:
    """The TXT record name and value to publish (split the value into ≤255-byte strings)."""
    kind, published, _ = _public_forms(key)
    return key.record_name, f"v=DKIM1; k={kind}; p={base64.b64encode(published).decode('ascii')}"


def parse_tag_list(text: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag=value list; tag names are case-sensitive, duplicates invalid."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip(" \t\r\n"):
            continue  # a trailing ";" is allowed
        name, sep, value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not sep or not name or name in tags:
            raise DkimError(f"malformed DKIM tag list near {part.strip()!r}")
        tags[name] = value.strip(" \t\r\n")
    return tags


def record_matches(key: DkimKey, txt_value: str) -> bool:
    """Whether a published TXT value carries this key's public key (RFC 6376 §3.6.1)."""
    strings = _QUOTED.findall(txt_value)
    if strings:  # zone-file form: "v=DKIM1; k=rsa; p=MIIB" "IjAN..." (RFC 7208-style split)
        txt_value = "".join(s.replace('\\"', '"').replace("\\\\", "\\") for s in strings)
    try:
        tags = parse_tag_list(txt_value)
    except DkimError:
        return False
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        return False  # v= must come first and be DKIM1
    kind, _, forms = _public_forms(key)
    if tags.get("k", "rsa") != kind:
        return False
    if "h" in tags and "sha256" not in _colon_list(tags["h"]):
        return False
    if "s" in tags and not {"email", "*"} & set(_colon_list(tags["s"])):
        return False
    p = re.sub(r"\s+", "", tags.get("p", ""))
    if not p:
        return False  # empty p= means the key was revoked
    try:
        published = base64.b64decode(p, validate=True)
    except ValueError:
        return False
    return published in forms


def _colon_list(value: str) -> list[str]:
    return [item.strip(" \t\r\n") for item in value.split(":")]


# -- canonicalization (RFC 6376 §3.4) -------------------------------------------------


def relaxed_header(field_bytes: bytes) -> bytes:
    """§3.4.2: one header field (without its final CRLF) as ``name:value``."""
    name, _, value = field_bytes.partition(b":")
    # unfold, WSP runs to one SP, no WSP at the ends of the value or around the colon
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """§3.4.4: the body as hashed; an empty body (or only empty lines) becomes empty."""
    if not body:
        return b""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"  # a non-empty body gets a final CRLF
    # WSP runs to one SP, none before CRLF; bytes methods in C, no regex or line loop
    if b"\t" in body:
        body = body.translate(_TAB_TO_SP)
    while b"  " in body:  # halves every run per pass: log2(longest run) passes
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n\r\n", 0, end):  # drop empty lines at the end
        end -= 2
    if end == 2 and body.startswith(b"\r\n"):
        end = 0
    return body[:end]


def body_hash(body: bytes) -> str:
    """The bh= value: base64 SHA-256 of the relaxed body (§3.7)."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (raw, folded, without final CRLF) and body; the body follows the first blank line."""
    if message.startswith(b"\r\n"):
        head, body = b"", message[2:]
    else:
        end = message.find(b"\r\n\r\n")
        head, body = (message, b"") if end < 0 else (message[:end], message[end + 4 :])
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise DkimError("header section starts with a continuation line")
            fields[-1] += b"\r\n" + line
        elif _FIELD_NAME.match(line.partition(b":")[0].rstrip(b" \t")) and b":" in line:
            fields.append(line)
        else:
            raise DkimError("malformed header field (no name or colon)")
    return fields, body


# -- signing (RFC 6376 §3.5, §3.7, §5) ------------------------------------------------


def _name(field_bytes: bytes) -> str:
    """The lower-case name of a field that `split_message` accepted (so ASCII)."""
    return field_bytes.partition(b":")[0].rstrip(b" \t").lower().decode("ascii")


def signed_header_names(
    present: Sequence[str], signed_headers: Sequence[str], oversign: Sequence[str]
) -> list[str]:
    """The h= list: each signed name once per present instance, plus one if oversigned."""
    counts: dict[str, int] = {}
    for name in present:
        counts[name] = counts.get(name, 0) + 1
    extra = {n.lower() for n in oversign}
    names = dict.fromkeys(n.lower() for n in (*signed_headers, *oversign))
    if not all(_FIELD_NAME.match(n.encode("ascii", "replace")) for n in names):
        raise DkimError("a header name to sign is not a valid field name")
    return [n for n in names for _ in range(counts.get(n, 0) + (n in extra))]


def _select(named: list[tuple[str, bytes]], h: list[str]) -> bytes:
    """§5.4.2: each h= entry takes the last not yet used instance; a missing one adds nothing."""
    stacks: dict[str, list[bytes]] = {}
    for name, f in named:
        stacks.setdefault(name, []).append(f)
    out = []
    for name in h:
        stack = stacks.get(name)
        if stack:
            out.append(relaxed_header(stack.pop()) + b"\r\n")
    return b"".join(out)


def _fold(tokens: list[tuple[str, str]]) -> str:
    """The signature field up to an empty ``b=``, folded near 76 columns; ``b=`` starts a line."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for sep, text in tokens:
        if text == "b=" or len(line) + len(sep) + len(text) > _FOLD_WIDTH:
            lines.append(line)
            line = "\t" + text
        else:
            line += sep + text
    lines.append(line)
    return "\r\n".join(lines)


def _signature(key: DkimKey, data: bytes) -> bytes:
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        return key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # RFC 8017 §8.2
    # RFC 8463 §3: PureEdDSA (Ed25519) over the SHA-256 hash of the data, not the data
    return key.private_key.sign(hashlib.sha256(data).digest())


def sign(
    message: bytes,
    keys: Sequence[DkimKey],
    *,
    signed_headers: Sequence[str] = DEFAULT_HEADERS,
    oversign: Sequence[str] = OVERSIGN,
    timestamp: int | None = None,
    expire_after: int | None = None,
) -> bytes:
    """``DKIM-Signature:`` fields (folded, CRLF-terminated) to prepend, one per key in order."""
    fields, body = split_message(message)
    named = [(_name(f), f) for f in fields]
    h = signed_header_names([name for name, _ in named], signed_headers, oversign)
    if not any(name == "from" for name, _ in named):
        raise DkimError("message has no From field")  # §5.4: From MUST be signed
    if "from" not in h:
        raise DkimError("the signed headers must include From")
    if expire_after is not None and expire_after <= 0:
        raise DkimError("expire_after must be positive (x= must follow t=)")
    t = int(time.time()) if timestamp is None else timestamp
    headers = _select(named, h)
    bh = body_hash(body)  # once, shared by all keys
    out = []
    # §3.5: FWS is allowed around the colons of h=, so the list may fold between names
    h_tokens = [("", f"{name}:") for name in h]
    h_tokens[0] = (" ", "h=" + h_tokens[0][1])
    h_tokens[-1] = (h_tokens[-1][0], h_tokens[-1][1][:-1] + ";")
    for key in keys:
        tags = ["v=1;", f"a={key.algorithm};", "c=relaxed/relaxed;", f"d={key.domain};",
                f"s={key.selector};", f"t={t};"]  # fmt: skip
        if expire_after is not None:
            tags.append(f"x={t + expire_after};")
        tokens = [(" ", tag) for tag in tags] + h_tokens + [(" ", f"bh={bh};"), (" ", "b=")]
        unsigned = _fold(tokens)
        # §3.7: the h= fields, then this field with empty b=, relaxed, without final CRLF
        data = headers + relaxed_header(unsigned.encode("ascii"))
        b = base64.b64encode(_signature(key, data)).decode("ascii")
        chunks = [b[i : i + _B64_CHUNK] for i in range(0, len(b), _B64_CHUNK)]
        out.append(unsigned + "\r\n\t".join(chunks) + "\r\n")
    return "".join(out).encode("ascii")
