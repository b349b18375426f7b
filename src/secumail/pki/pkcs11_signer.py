"""Keys on a PKCS#11 token (an HSM, or SoftHSM2) behind the `Signer` seam of `pki.ca`.

`open_signer(config, label)` finds the private key labelled `label` on the token and
returns a `Pkcs11Signer`: `public_key()` is built from the token's public key object
(CKA_MODULUS/CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS/CKA_EC_POINT) and `sign()` returns what
X.509 and CMS carry, like every `Signer`:

    RSA      PKCS#1 v1.5 (RFC 8017 §8.2): CKM_SHA256/384/512_RSA_PKCS, or where the token
             lacks those, the hash here and CKM_RSA_PKCS over the DigestInfo (§9.2)
    EC       ECDSA (P-256, P-384, P-521): the hash here, CKM_ECDSA over the digest; the
             token's r || s (PKCS#11 v2.40 §2.3.1) is re-encoded as DER Ecdsa-Sig-Value
             (RFC 5480 §2.2.3)
    Ed25519  CKM_EDDSA without parameters: pure Ed25519 (RFC 8032 §5.1), raw 64 bytes

`generate_keypair(config, label, key_type)` makes a key pair on the token: private key
sensitive, not extractable, for signing only. Opening checks that the key signs and that
its public key verifies the signature, so a mismatched pair fails at start-up.

Sessions, login and threads: `pki.pkcs11_token`. Signing is blocking; call it through
`asyncio.to_thread`. Errors are `ConfigError` (a key that is missing, of an unsupported
type, or that the token will not use), `ConflictError` for generating over an existing
label, `ValueError` for a hash the key cannot take.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from secumail.errors import ConfigError, ConflictError
from secumail.pki.ca import PublicKey
from secumail.pki.pkcs11_token import (
    Pkcs11Config,
    ThreadSession,
    TokenSessions,
    p11,
    pin_from,
    pkcs11,
)

__all__ = [
    "KEY_TYPES",
    "Pkcs11Config",
    "Pkcs11Signer",
    "generate_keypair",
    "open_signer",
    "pin_from",
]

KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ed25519")

# DER OBJECT IDENTIFIERs as they appear in CKA_EC_PARAMS (namedCurve, RFC 5480 §2.1.1.1).
_CURVE_OIDS: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),
    bytes.fromhex("06052b81040023"): ec.SECP521R1(),
}
_CURVE_PARAMS = {"ec-p256": "06082a8648ce3d030107", "ec-p384": "06052b81040022"}
# PKCS#11 v3.0 §2.3.10: CKA_EC_PARAMS of an Edwards key is the RFC 8410 OID (id-Ed25519,
# 1.3.101.112) or the PrintableString "edwards25519" of earlier drafts.
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")

# RFC 8017 §9.2 note 1: DER DigestInfo prefixes for EMSA-PKCS1-v1_5.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_SELF_TEST = b"secumail: does this PKCS#11 key sign?"


class Pkcs11Signer:
    """A `Signer` whose private key stays on a PKCS#11 token. Close it when done."""

    def __init__(self, tokens: TokenSessions, label: str, public: PublicKey) -> None:
        self._tokens = tokens
        self.label = label
        self._public = public
        self._closed = False

    # -- Signer

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
        """Sign `data` (hashed here or on the token) as the `Signer` protocol says."""
        public = self._public
        if isinstance(public, ed25519.Ed25519PublicKey):
            if algorithm is not None:
                raise ValueError("Ed25519 signs the data itself: pass algorithm=None")
            return self._sign(bytes(data), pkcs11.Mechanism.EDDSA)
        name = _hash_name(algorithm)
        if isinstance(public, rsa.RSAPublicKey):
            mechanism = _RSA_MECHANISMS[name]
            if mechanism in self._tokens.mechanisms:
                return self._sign(bytes(data), mechanism)
            digest = hashlib.new(name, data).digest()
            return self._sign(_DIGEST_INFO[name] + digest, pkcs11.Mechanism.RSA_PKCS)
        raw = self._sign(hashlib.new(name, data).digest(), pkcs11.Mechanism.ECDSA)
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    # -- identity and life

    @property
    def token_label(self) -> str:
        return self._tokens.config.token_label

    @property
    def uri(self) -> str:
        """The key as an RFC 7512 PKCS#11 URI (no PIN), as p11-kit and OpenSSL providers take it."""
        token = quote(self.token_label, safe="")
        return f"pkcs11:token={token};object={quote(self.label, safe='')};type=private"

    def close(self) -> None:
        """Stop using the key; the last key on a token closes its sessions and logs out."""
        if not self._closed:
            self._closed = True
            self._tokens.release()

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Pkcs11Signer {self.uri} {type(self._public).__name__}>"

    def _sign(self, data: bytes, mechanism: Any) -> bytes:
        if self._closed:
            raise ConfigError(f"PKCS#11 key {self.label!r} was closed")
        what = f"signing with PKCS#11 key {self.label!r} on token {self.token_label!r}"
        return self._tokens.run(
            lambda state: bytes(_private_key(state, self.label).sign(data, mechanism=mechanism)),
            what,
        )


def _hash_name(algorithm: hashes.HashAlgorithm | None) -> str:
    if algorithm is None:
        raise ValueError("RSA and ECDSA signatures need a hash algorithm")
    if algorithm.name not in _HASHES:
        raise ValueError(
            f"a PKCS#11 key signs with SHA-256, SHA-384 or SHA-512, not {algorithm.name}"
        )
    return algorithm.name


_RSA_MECHANISMS: dict[str, Any] = (
    {
        "sha256": pkcs11.Mechanism.SHA256_RSA_PKCS,
        "sha384": pkcs11.Mechanism.SHA384_RSA_PKCS,
        "sha512": pkcs11.Mechanism.SHA512_RSA_PKCS,
    }
    if pkcs11 is not None
    else {}
)


# --- opening and generating -----------------------------------------------------------


def open_signer(config: Pkcs11Config, label: str) -> Pkcs11Signer:
    """The key labelled `label` on `config`'s token, checked by one signature.

    Raises ConfigError naming what is wrong: the module, the token, the PIN, the key, a
    key type or mechanism the token lacks.
    """
    tokens = TokenSessions.acquire(config)
    try:
        where = f"PKCS#11 key {label!r} on token {config.token_label!r}"
        public = tokens.run(lambda state: _read_public(state, label), f"reading {where}")
        _check_mechanisms(tokens, public, where)
        signer = Pkcs11Signer(tokens, label, public)
        _self_test(signer, where)
        return signer
    except BaseException:
        tokens.release()
        raise


def generate_keypair(config: Pkcs11Config, label: str, key_type: str) -> PublicKey:
    """Make a key pair labelled `label` on the token; return its public key.

    `key_type` is one of KEY_TYPES. The private key is sensitive, not extractable and may
    only sign. Refused (ConflictError) when a key with this label exists.
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; expected one of {KEY_TYPES}")
    if not label or len(label.encode()) > 255:
        raise ValueError("a PKCS#11 key label is 1 to 255 bytes")
    tokens = TokenSessions.acquire(config)
    try:
        where = f"PKCS#11 key {label!r} on token {config.token_label!r}"
        _check_generation(tokens, key_type, config.token_label)

        def generate(state: ThreadSession) -> PublicKey:
            for kind in (pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.ObjectClass.PUBLIC_KEY):
                if list(
                    state.session.get_objects(
                        {pkcs11.Attribute.CLASS: kind, pkcs11.Attribute.LABEL: label}
                    )
                ):
                    raise ConflictError(f"{where} exists already")
            rw = state.token.open(rw=True)
            try:
                _generate(rw, label, key_type)
            finally:
                rw.close()
            return _read_public(state, label)

        return tokens.run(generate, f"generating {where}")
    finally:
        tokens.release()


def _generate(session: Any, label: str, key_type: str) -> None:
    attribute, key_kind = pkcs11.Attribute, pkcs11.KeyType
    capabilities = pkcs11.MechanismFlag.SIGN | pkcs11.MechanismFlag.VERIFY
    common = {"id": os.urandom(16), "label": label, "store": True, "capabilities": capabilities}
    private = {
        attribute.SENSITIVE: True,
        attribute.EXTRACTABLE: False,
        attribute.PRIVATE: True,
        attribute.DECRYPT: False,
        attribute.UNWRAP: False,
        attribute.DERIVE: False,
    }
    public: dict[Any, Any] = {attribute.ENCRYPT: False, attribute.WRAP: False}
    if key_type.startswith("rsa-"):
        session.generate_keypair(
            key_kind.RSA,
            int(key_type[4:]),
            public_template=public,
            private_template=private,
            **common,
        )
    elif key_type == "ed25519":
        public[attribute.EC_PARAMS] = _ED25519_PARAMS[0]
        session.generate_keypair(
            key_kind.EC_EDWARDS,
            mechanism=pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            public_template=public,
            private_template=private,
            **common,
        )
    else:
        public[attribute.EC_PARAMS] = bytes.fromhex(_CURVE_PARAMS[key_type])
        session.generate_keypair(
            key_kind.EC, public_template=public, private_template=private, **common
        )


def _check_generation(tokens: TokenSessions, key_type: str, token_label: str) -> None:
    needed = {
        "rsa": (pkcs11.Mechanism.RSA_PKCS_KEY_PAIR_GEN,),
        "ec": (pkcs11.Mechanism.EC_KEY_PAIR_GEN, pkcs11.Mechanism.ECDSA),
        "ed25519": (pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN, pkcs11.Mechanism.EDDSA),
    }[key_type.split("-")[0]]
    missing = [m.name for m in needed if m not in tokens.mechanisms]
    if missing:
        raise ConfigError(
            f"PKCS#11 token {token_label!r} cannot make {key_type} keys (lacks "
            f"{', '.join('CKM_' + m for m in missing)})" + _ED25519_HINT * (key_type == "ed25519")
        )


_ED25519_HINT = "; keep the Ed25519 key (evidence, DKIM) in a file instead"


def _check_mechanisms(tokens: TokenSessions, public: PublicKey, where: str) -> None:
    if (
        isinstance(public, ed25519.Ed25519PublicKey)
        and pkcs11.Mechanism.EDDSA not in tokens.mechanisms
    ):
        raise ConfigError(
            f"{where}: the token cannot sign with Ed25519 (no CKM_EDDSA){_ED25519_HINT}"
        )
    if (
        isinstance(public, ec.EllipticCurvePublicKey)
        and pkcs11.Mechanism.ECDSA not in tokens.mechanisms
    ):
        raise ConfigError(f"{where}: the token cannot sign with ECDSA (no CKM_ECDSA)")
    if isinstance(public, rsa.RSAPublicKey) and not (
        pkcs11.Mechanism.RSA_PKCS in tokens.mechanisms
        or set(_RSA_MECHANISMS.values()) <= tokens.mechanisms
    ):
        raise ConfigError(f"{where}: the token cannot make PKCS#1 v1.5 signatures")


def _self_test(signer: Pkcs11Signer, where: str) -> None:
    public = signer.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signer.sign(_SELF_TEST, None), _SELF_TEST)
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(
                signer.sign(_SELF_TEST, hashes.SHA256()), _SELF_TEST, PKCS1v15(), hashes.SHA256()
            )
        else:
            public.verify(
                signer.sign(_SELF_TEST, hashes.SHA256()), _SELF_TEST, ec.ECDSA(hashes.SHA256())
            )
    except InvalidSignature as exc:
        raise ConfigError(
            f"{where}: its public key does not verify its signatures (a mismatched pair?)"
        ) from exc


# --- reading keys ---------------------------------------------------------------------


def _private_key(state: ThreadSession, label: str) -> Any:
    key = state.keys.get(("private", label))
    if key is None:
        key = _find(state, pkcs11.ObjectClass.PRIVATE_KEY, label)
        if key is None:
            raise ConfigError(
                f"no PKCS#11 private key labelled {label!r} on token {state.token.label!r}"
            )
        state.keys[("private", label)] = key
    return key


def _find(state: ThreadSession, object_class: Any, label: str) -> Any | None:
    try:
        return state.session.get_key(object_class=object_class, label=label)
    except p11.NoSuchKey:
        return None
    except p11.MultipleObjectsReturned as exc:
        raise ConfigError(
            f"more than one PKCS#11 key is labelled {label!r}; labels must be unique"
        ) from exc


def _read_public(state: ThreadSession, label: str) -> PublicKey:
    """The public key of the pair `label`, from its public key object (or, for RSA, from
    the private key's public attributes when the token keeps no public object)."""
    attribute = pkcs11.Attribute
    private = _private_key(state, label)
    holder = _find(state, pkcs11.ObjectClass.PUBLIC_KEY, label)
    key_type = private[attribute.KEY_TYPE]
    if key_type == pkcs11.KeyType.RSA:
        source = holder or private
        modulus = int.from_bytes(source[attribute.MODULUS], "big")
        exponent = int.from_bytes(source[attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if key_type not in (pkcs11.KeyType.EC, pkcs11.KeyType.EC_EDWARDS):
        raise ConfigError(
            f"PKCS#11 key {label!r} is of an unsupported type ({describe_type(key_type)})"
        )
    if holder is None:
        raise ConfigError(f"PKCS#11 key {label!r} has no public key object on the token")
    return public_from_ec_attributes(holder[attribute.EC_PARAMS], holder[attribute.EC_POINT])


def describe_type(key_type: Any) -> str:
    return getattr(key_type, "name", str(key_type))


def public_from_ec_attributes(params: bytes, point: bytes) -> PublicKey:
    """A `cryptography` public key from CKA_EC_PARAMS and CKA_EC_POINT (EC or Ed25519).

    CKA_EC_POINT is, per PKCS#11, a DER OCTET STRING around the point (X9.62 for EC,
    RFC 8032 encoding for Ed25519); some tokens return the bare point, so both are read.
    """
    params, point = bytes(params), bytes(point)
    if params in _ED25519_PARAMS:
        raw = _unwrap_octets(point, (32,))
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    curve = _CURVE_OIDS.get(params)
    if curve is None:
        raise ConfigError(f"unsupported EC curve on the token (CKA_EC_PARAMS {params.hex()})")
    size = (curve.key_size + 7) // 8
    raw = _unwrap_octets(point, (1 + 2 * size, 1 + size))
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)
    except ValueError as exc:
        raise ConfigError(f"the token's EC point is not on {curve.name}: {exc}") from exc


def _unwrap_octets(data: bytes, bare_lengths: tuple[int, ...]) -> bytes:
    if len(data) in bare_lengths:
        return data
    # DER OCTET STRING: tag 04, then a short or one/two-byte long length.
    if len(data) >= 2 and data[0] == 0x04:
        if data[1] < 0x80:
            length, body = data[1], data[2:]
        elif data[1] == 0x81 and len(data) >= 3:
            length, body = data[2], data[3:]
        elif data[1] == 0x82 and len(data) >= 4:
            length, body = int.from_bytes(data[2:4], "big"), data[4:]
        else:
            length, body = -1, b""
        if length == len(body) and length in bare_lengths:
            return body
    raise ConfigError(f"cannot read the public key point from the token ({len(data)} bytes)")
