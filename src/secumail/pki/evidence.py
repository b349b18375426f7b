"""Signed delivery evidence: one JWS per successful delivery, verifiable without Secumail.

Format: JWS Compact Serialization (RFC 7515 §7.1) signed with EdDSA over Ed25519
(RFC 8037 §3.1). A third party needs only the token, the public key as a JWK
(RFC 7517, RFC 8037 §2) and any JOSE library, or `openssl` and `base64`
(docs/evidence.md).

    protected header  {"alg":"EdDSA","kid":"<RFC 7638 thumbprint>","typ":"secumail-evidence+json"}
    payload           the record as canonical JSON: keys sorted, no insignificant
                      white space, UTF-8, no NaN/Infinity, no duplicate keys

`typ` (RFC 7515 §4.1.9, RFC 8725 §3.11 explicit typing) says what the token is, so
nothing else signed with a key of the same kind passes for evidence; it is not "+jwt"
because the payload is a delivery record, not a JWT claims set. The verifier accepts
only `alg` EdDSA and exactly the three header parameters above (no `crit`, no `b64`,
no embedded `jwk`/`jku`/`x5u`: the key comes from the verifier, never from the token).

Records are built by the caller; the fields of a delivery record are: message_id,
message_sha256 (`message_sha256()` of the exact bytes sent in DATA), envelope_from,
recipient, mx_host, mx_ip, route (dane / mta-sts / verified), tls_version, tls_cipher,
peer_cert_sha256, remote_reply, timestamp (RFC 3339, UTC), gateway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from secumail.errors import ConfigError, ConflictError, EvidenceError
from secumail.keyfiles import pem, write_file
from secumail.pki.ca import FileKeySigner, Signer

ALG = "EdDSA"
TYP = "secumail-evidence+json"
_HEADER_KEYS = {"alg", "kid", "typ"}
MAX_TOKEN = 64 * 1024


# --- keys -----------------------------------------------------------------------------


class EvidenceKey:
    """The Ed25519 key that signs evidence, behind the `Signer` seam (file or HSM)."""

    def __init__(self, signer: Signer) -> None:
        public = signer.public_key()
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise ConfigError("the evidence key must be Ed25519")
        self._signer = signer
        self._public = public
        self._jwk: dict[str, str] | None = None

    @classmethod
    def generate(cls) -> EvidenceKey:
        return cls(FileKeySigner(ed25519.Ed25519PrivateKey.generate()))

    @classmethod
    def load(cls, path: Path) -> EvidenceKey:
        return cls(FileKeySigner.load(Path(path)))

    def save(self, path: Path) -> None:
        """Write the private key as PKCS #8 PEM, mode 0600; never over an existing file."""
        if not isinstance(self._signer, FileKeySigner):
            raise ConfigError("this evidence key lives outside a file (HSM) and cannot be saved")
        try:
            write_file(Path(path), pem(self._signer.private_key), private=True, overwrite=False)
        except FileExistsError as exc:
            raise ConflictError(f"{path} exists; an evidence key is never overwritten") from exc

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037 §2), `kid` = its RFC 7638 thumbprint."""
        if self._jwk is None:
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self._raw_public())}
            self._jwk = {**jwk, "kid": jwk_thumbprint(jwk), "alg": ALG, "use": "sig"}
        return dict(self._jwk)

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data, None)

    def _raw_public(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3 thumbprint (SHA-256, base64url) of an OKP key (RFC 8037 §2: crv, kty, x)."""
    required = {"crv": jwk.get("crv"), "kty": jwk.get("kty"), "x": jwk.get("x")}
    if not all(isinstance(v, str) for v in required.values()):
        raise EvidenceError("the JWK lacks crv, kty or x")
    return _b64url(hashlib.sha256(_canonical(required)).digest())


# --- signing and verifying ------------------------------------------------------------


def message_sha256(message: bytes) -> str:
    """Lower-case hex SHA-256 of the exact message bytes (what `sha256sum` prints)."""
    return hashlib.sha256(message).hexdigest()


def canonical_json(record: dict[str, Any]) -> bytes:
    """The payload bytes: sorted keys, no white space, UTF-8; refuses NaN and non-JSON."""
    if not isinstance(record, dict):
        raise TypeError("an evidence record is a dict")
    try:
        return _canonical(record)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the evidence record is not plain JSON: {exc}") from exc


def sign_evidence(record: dict[str, Any], key: EvidenceKey) -> str:
    """A JWS compact token over the canonical JSON of `record`."""
    header = {"alg": ALG, "kid": key.public_jwk()["kid"], "typ": TYP}
    signing_input = _b64url(_canonical(header)) + "." + _b64url(canonical_json(record))
    signature = key.sign(signing_input.encode("ascii"))
    return signing_input + "." + _b64url(signature)


def verify_evidence(token: str, public_jwk: dict[str, Any]) -> dict[str, Any]:
    """The record inside `token`, once its EdDSA signature by `public_jwk` is verified.

    Raises EvidenceError for a malformed token, another algorithm or key, or a bad
    signature.
    """
    public = _public_key(public_jwk)
    kid = public_jwk.get("kid") or jwk_thumbprint(public_jwk)
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise EvidenceError("evidence token is not a string of reasonable size")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise EvidenceError("evidence token is not JWS compact serialization (3 parts)")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_b64url_decode(header_b64, "header"), "header")
    # RFC 8725 §3.1: only the algorithm we expect, never "none" or an HMAC.
    if header.get("alg") != ALG:
        raise EvidenceError(f"evidence must be signed with EdDSA, not {header.get('alg')!r}")
    unknown = set(header) - _HEADER_KEYS
    if unknown:
        raise EvidenceError(f"unexpected header parameters: {', '.join(sorted(unknown))}")
    if header.get("typ") != TYP:
        raise EvidenceError(f"not a Secumail evidence token (typ {header.get('typ')!r})")
    if header.get("kid") != kid:
        raise EvidenceError("evidence was signed with another key (kid differs)")
    signature = _b64url_decode(signature_b64, "signature")
    try:
        public.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise EvidenceError("evidence signature does not verify") from exc
    return _json_object(_b64url_decode(payload_b64, "payload"), "payload")


# --- exported files -------------------------------------------------------------------

# An entry of an export (`secumail evidence export`): the token is the evidence; the
# other members are copies for reading, and must say exactly what the token says.
ENTRY_KEYS = {"token", "recipient", "record"}


def verify_entry(entry: Any, public_jwk: dict[str, Any]) -> dict[str, Any]:
    """The signed record of one exported entry, once the token verifies and every readable
    member agrees with it. Raises EvidenceError naming the member that does not."""
    if not isinstance(entry, dict):
        raise EvidenceError("an evidence entry is a JSON object")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise EvidenceError(f"unsigned members in the entry: {', '.join(sorted(unknown))}")
    token = entry.get("token")
    if not isinstance(token, str):
        raise EvidenceError("the entry holds no token")
    record = verify_evidence(token, public_jwk)
    if "recipient" in entry and entry["recipient"] != record.get("recipient"):
        raise EvidenceError(
            f"the readable recipient {str(entry['recipient'])[:200]!r} is not the signed "
            f"recipient {record.get('recipient')!r}"
        )
    if "record" in entry and entry["record"] != record:
        copy = entry["record"] if isinstance(entry["record"], dict) else {}
        differ = sorted(k for k in set(copy) | set(record) if copy.get(k) != record.get(k))
        raise EvidenceError(
            "the readable record differs from the signed one in: "
            + (", ".join(differ)[:300] or "its type")
        )
    return record


# --- helpers --------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    # RFC 7515 §2: base64url without padding; refuse anything else.
    if not text or "=" in text or not text.isascii() or len(text) % 4 == 1:
        raise EvidenceError(f"evidence {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"evidence {what} is not base64url") from exc
    if _b64url(data) != text:
        raise EvidenceError(f"evidence {what} is not canonical base64url")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise EvidenceError(f"evidence {what} repeats a member name")
        return result

    def no_constants(name: str) -> Any:
        raise EvidenceError(f"evidence {what} holds {name}")

    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceError(f"evidence {what} is not UTF-8 JSON") from exc
    except RecursionError as exc:  # "[[[[…" nested deeper than the parser recurses
        raise EvidenceError(f"evidence {what} is nested too deeply") from exc
    if not isinstance(value, dict):
        raise EvidenceError(f"evidence {what} is not a JSON object")
    return value


def _public_key(jwk: dict[str, Any]) -> ed25519.Ed25519PublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise EvidenceError("the verification key must be an Ed25519 OKP JWK (RFC 8037)")
    if "d" in jwk:
        raise EvidenceError("the verification JWK holds a private key; pass the public JWK")
    if jwk.get("alg", ALG) != ALG:
        raise EvidenceError(f"the verification JWK is for {jwk.get('alg')!r}, not EdDSA")
    raw = _b64url_decode(str(jwk.get("x", "")), "public key")
    if len(raw) != 32:
        raise EvidenceError("an Ed25519 public key is 32 bytes")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)
