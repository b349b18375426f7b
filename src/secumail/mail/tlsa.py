"""DANE for SMTP: TLSA records (RFC 6698 §2) matched against a server's certificates.

`verify_dane` authenticates the chain an MX presented against the MX's DNSSEC-validated
TLSA RRset, as RFC 7672 §3.1 and RFC 7671 §5 ask of an SMTP client:

- DANE-EE(3): the leaf certificate (or its public key) matches; its names, dates and
  issuer are not looked at (RFC 7672 §3.1.1, RFC 7671 §5.1).
- DANE-TA(2): a certificate the server sent (or, for ``2 1 0``, a bare public key) is the
  trust anchor; the chain from the leaf up to it must verify signature by signature with
  CA certificates in between, the leaf and the intermediates must be valid now, and the
  leaf must name the MX host (RFC 7672 §3.1.2, §3.2.3; RFC 7671 §5.2). The anchor's own
  dates are not checked: it is trusted because DNS names it (RFC 5280 §6.1.1 (d)).
- PKIX-TA(0) and PKIX-EE(1) records, and unknown selectors or matching types, are
  unusable for SMTP (RFC 7672 §3.1.3): `usable_for_smtp` drops them.

Failures carry the RFC 8460 §4.3 result type. Whether the RRset itself was secure, and
what to do with no usable records, is for the caller (the secure-route decision).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import idna
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from secumail.mail.tlsrpt import ResultType


class TlsaError(ValueError):
    """A TLSA record's presentation form cannot be parsed."""


class TlsaUsage(enum.IntEnum):  # RFC 6698 §2.1.1, names from RFC 7218
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class TlsaSelector(enum.IntEnum):  # RFC 6698 §2.1.2
    CERT = 0
    SPKI = 1


class TlsaMatching(enum.IntEnum):  # RFC 6698 §2.1.3
    FULL = 0
    SHA256 = 1
    SHA512 = 2


_DIGEST_SIZE = {TlsaMatching.SHA256: 32, TlsaMatching.SHA512: 64}
_MNEMONICS = (  # RFC 7218 §2
    {"PKIX-TA": 0, "PKIX-EE": 1, "DANE-TA": 2, "DANE-EE": 3, "PRIVCERT": 255},
    {"CERT": 0, "SPKI": 1, "PRIVSEL": 255},
    {"FULL": 0, "SHA2-256": 1, "SHA2-512": 2, "PRIVMATCH": 255},
)
_E = TypeVar("_E", bound=x509.ExtensionType)
MAX_CHAIN = 16  # certificates looked at; a server sending more is not helped by more


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True, slots=True)
class DaneResult:
    ok: bool
    matched: TlsaRecord | None
    reason: str
    rfc8460: str  # RFC 8460 §4.3 result type; "" when ok


def parse_tlsa(text: str) -> TlsaRecord:
    """``3 1 1 <hex>`` (RFC 6698 §2.2), RFC 7218 names allowed; hex may contain spaces.

    A leading owner name, TTL and class ending in ``TLSA`` are skipped.
    """
    tokens = text.replace("(", " ").replace(")", " ").split()
    upper = [t.upper() for t in tokens]
    if "TLSA" in upper:
        tokens = tokens[upper.index("TLSA") + 1 :]
    if len(tokens) < 4:
        raise TlsaError(f"TLSA needs usage, selector, matching type and data: {text!r}")
    fields = []
    for token, names in zip(tokens[:3], _MNEMONICS, strict=True):
        # ASCII digits only: str.isdigit() is also true for "²" and other scripts' digits,
        # which int() refuses or reads; more than 5 digits is no 0..255 (and int() of a
        # 5,000-digit string raises ValueError in Python 3.11).
        digits = token.isascii() and token.isdigit()
        value = names.get(token.upper()) if not digits else int(token) if len(token) <= 5 else None
        if value is None or not 0 <= value <= 255:
            raise TlsaError(f"bad TLSA field {token!r} in {text!r}")
        fields.append(value)
    try:
        data = bytes.fromhex("".join(tokens[3:]))
    except ValueError:
        raise TlsaError(f"TLSA data is not hexadecimal: {text!r}") from None
    if not data:
        raise TlsaError(f"TLSA data is empty: {text!r}")
    return TlsaRecord(fields[0], fields[1], fields[2], data)


def usable_for_smtp(records: Iterable[TlsaRecord]) -> list[TlsaRecord]:
    """RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3) with known selector and matching
    type count; a digest of the wrong length can never match and is dropped too."""
    usable = []
    for r in records:
        if r.usage not in (TlsaUsage.DANE_TA, TlsaUsage.DANE_EE):
            continue  # PKIX-TA(0)/PKIX-EE(1): unusable for SMTP (§3.1.3)
        if r.selector not in (0, 1) or r.mtype not in (0, 1, 2):
            continue
        if r.mtype in _DIGEST_SIZE and len(r.data) != _DIGEST_SIZE[TlsaMatching(r.mtype)]:
            continue
        usable.append(r)
    return usable


# --- matching (RFC 6698 §2.1.2, §2.1.3) ------------------------------------------------


def _tlv(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``offset``."""
    try:
        tag, length, pos = der[offset], der[offset + 1], offset + 2
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 4 or pos + count > len(der):
                raise ValueError("bad DER length")
            length, pos = int.from_bytes(der[pos : pos + count], "big"), pos + count
    except IndexError:
        raise ValueError("truncated DER") from None
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def spki_der(cert_der: bytes) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in it (selector 1)."""
    _, cert_start, _ = _tlv(cert_der, 0)  # Certificate ::= SEQUENCE
    _, pos, _ = _tlv(cert_der, cert_start)  # tbsCertificate ::= SEQUENCE
    if _tlv(cert_der, pos)[0] == 0xA0:  # [0] version
        pos = _tlv(cert_der, pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _tlv(cert_der, pos)[2]
    tag, _, end = _tlv(cert_der, pos)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return cert_der[pos:end]


def _association(record: TlsaRecord, cert_der: bytes) -> bytes | None:
    try:
        selected = cert_der if record.selector == 0 else spki_der(cert_der)
    except ValueError:
        return None
    if record.mtype == TlsaMatching.SHA256:
        return hashlib.sha256(selected).digest()
    if record.mtype == TlsaMatching.SHA512:
        return hashlib.sha512(selected).digest()
    return selected


def match_ee(record: TlsaRecord, leaf_der: bytes) -> bool:
    """Does ``record``'s association data match this certificate (selector, mtype)?"""
    if record.selector not in (0, 1) or record.mtype not in (0, 1, 2):
        return False
    data = _association(record, leaf_der)
    return data is not None and hmac.compare_digest(data, record.data)


def match_ta(record: TlsaRecord, chain_der: list[bytes]) -> int | None:
    """Index of the certificate in the presented chain that ``record`` names as anchor.

    The leaf (index 0) counts only when it is self-issued (RFC 7671 §5.2: a DANE-TA
    record names an issuer). ``2 1 0`` records whose anchor was not sent are handled by
    `verify_dane`, which checks signatures against the key in the record.
    """
    for index, der in enumerate(chain_der[:MAX_CHAIN]):
        if index == 0 and not _self_issued_der(der):
            continue
        if match_ee(record, der):
            return index
    return None


def _self_issued_der(der: bytes) -> bool:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return cert.issuer == cert.subject


# --- DANE-TA chain checks (RFC 7671 §5.2, RFC 5280 §6 in brief) -----------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    rank: int  # 0 ok; lower is closer to success
    reason: str
    rfc8460: str


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)  # issuer name and signature
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signed_by_key(cert: x509.Certificate, key: object) -> bool:
    """For ``2 1 0``: does the bare public key in the record verify ``cert``'s signature?"""
    sig, tbs = cert.signature, cert.tbs_certificate_bytes
    try:
        params = cert.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PSS | padding.PKCS1v15):
            hash_alg = cert.signature_hash_algorithm
            if hash_alg is None:
                return False
            key.verify(sig, tbs, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(sig, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(sig, tbs)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


class _Presented:
    """The certificates a server sent, parsed once, with "who issued whom" cached."""

    def __init__(self, chain_der: list[bytes]) -> None:
        self.ders = chain_der[:MAX_CHAIN]
        self.certs = [_load(der) for der in self.ders]
        self._issuers: dict[int, list[int]] = {}

    def issuers_of(self, index: int) -> list[int]:
        if index not in self._issuers:
            child = self.certs[index]
            self._issuers[index] = [
                j
                for j, parent in enumerate(self.certs)
                if j != index
                and child is not None
                and parent is not None
                and _issued_by(child, parent)
            ]
        return self._issuers[index]


def _find_path(record: TlsaRecord, chain: _Presented) -> tuple[list[int], bool] | None:
    """Leaf-first indices up to the anchor, and whether the anchor is the record's bare key.

    Each certificate is expanded once, so a server sending many certificates that issue
    each other costs at most MAX_CHAIN² signature checks, not a search over all orders.
    """
    bare_key = None
    if record.selector == TlsaSelector.SPKI and record.mtype == TlsaMatching.FULL:
        try:
            bare_key = serialization.load_der_public_key(record.data)
        except (ValueError, UnsupportedAlgorithm):
            bare_key = None
    expanded: set[int] = set()

    def search(path: list[int]) -> tuple[list[int], bool] | None:
        here = path[-1]
        expanded.add(here)
        cert = chain.certs[here]
        assert cert is not None
        if (here > 0 or cert.issuer == cert.subject) and match_ee(record, chain.ders[here]):
            return path, False
        if bare_key is not None and _signed_by_key(cert, bare_key):
            return path, True
        for j in chain.issuers_of(here):
            if j not in expanded:
                found = search([*path, j])
                if found:
                    return found
        return None

    return search([0])


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _ca_problem(cert: x509.Certificate, is_anchor: bool, below: int) -> str:
    """Why ``cert`` may not issue the certificates below it in the path ('' if it may)."""
    try:
        bc = _extension(cert, x509.BasicConstraints)
        ku = _extension(cert, x509.KeyUsage)
    except ValueError:
        return "has malformed extensions"
    if bc is None and not is_anchor:  # RFC 5280 §6.1.4 (k); a v1 anchor is tolerated
        return "has no basicConstraints"
    if bc is not None and not bc.ca:
        return "is not a CA certificate"
    if ku is not None and not ku.key_cert_sign:  # RFC 5280 §6.1.4 (n)
        return "may not sign certificates"
    if bc is not None and bc.path_length is not None and below > bc.path_length:
        return "exceeds its path length constraint"  # RFC 5280 §6.1.4 (m)
    return ""


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension's value, None when absent; ValueError when the extensions are malformed."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _reference_key(name: str) -> str:
    name = name.strip().removesuffix(".").lower()
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            return ""
    return name


def _presented_names(cert: x509.Certificate) -> list[str]:
    """DNS-ID subjectAltNames; the Common Name only when there are none (RFC 7672 §3.2.3)."""
    try:
        san = _extension(cert, x509.SubjectAlternativeName)
    except ValueError:
        return []
    dns_names = san.get_values_for_type(x509.DNSName) if san is not None else []
    if dns_names:
        return dns_names
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def names_match(cert: x509.Certificate, reference_names: Iterable[str]) -> bool:
    """RFC 7672 §3.2.3: a presented name equals a reference name, or is ``*.`` plus
    exactly the reference name minus its first label (never a bare ``*.tld``)."""
    refs = {key for key in (_reference_key(n) for n in reference_names) if key}
    for presented in _presented_names(cert):
        p = presented.strip().removesuffix(".").lower()
        if p in refs:
            return True
        if p.startswith("*.") and "." in p[2:]:
            for ref in refs:
                first, dot, rest = ref.partition(".")
                if first and dot and rest == p[2:]:
                    return True
    return False


def _check_ta(
    record: TlsaRecord, chain: _Presented, names: Sequence[str], now: datetime
) -> _Outcome:
    certs = chain.certs
    leaf = certs[0]
    if leaf is None:
        return _Outcome(2, "the server certificate cannot be parsed", ResultType.VALIDATION_FAILURE)
    found = _find_path(record, chain)
    if found is None:
        if match_ta(record, chain.ders) is None:
            return _Outcome(
                3, f"no certificate matches DANE-TA record {record}", ResultType.TLSA_INVALID
            )
        return _Outcome(
            2,
            f"the server certificate does not chain to the anchor of DANE-TA record {record}",
            ResultType.VALIDATION_FAILURE,
        )
    path, by_key = found
    for position, index in enumerate(path[1:], start=1):
        cert = certs[index]
        assert cert is not None
        is_anchor = index == path[-1] and not by_key
        below = sum(1 for i in path[1:position] if not _is_self_issued(certs[i]))
        if problem := _ca_problem(cert, is_anchor, below):
            return _Outcome(
                2,
                f"issuer {cert.subject.rfc4514_string()} {problem}",
                ResultType.VALIDATION_FAILURE,
            )
        if not is_anchor and not _valid_at(cert, now):
            return _Outcome(
                1,
                f"intermediate {cert.subject.rfc4514_string()} is not valid now",
                ResultType.CERTIFICATE_EXPIRED,
            )
    if now > leaf.not_valid_after_utc:
        return _Outcome(1, "the server certificate has expired", ResultType.CERTIFICATE_EXPIRED)
    if now < leaf.not_valid_before_utc:
        return _Outcome(1, "the server certificate is not yet valid", ResultType.VALIDATION_FAILURE)
    if not names_match(leaf, names):
        return _Outcome(
            1,
            f"the server certificate does not name {' or '.join(names)}",
            ResultType.CERTIFICATE_HOST_MISMATCH,
        )
    return _Outcome(0, f"DANE-TA record {record} authenticated the chain", "")


def _is_self_issued(cert: x509.Certificate | None) -> bool:
    return cert is not None and cert.issuer == cert.subject


def verify_dane(
    records: Iterable[TlsaRecord],
    chain_der: list[bytes],
    mx_host: str,
    now: datetime,
    *,
    reference_names: Iterable[str] = (),
) -> DaneResult:
    """Authenticate the presented chain (leaf first) with the MX's TLSA records.

    ``reference_names`` adds names the leaf may carry besides ``mx_host`` (RFC 7672
    §3.2.3: the TLSA base domain after CNAME expansion; the next-hop domain where the
    operator allows it). ``now`` should be timezone-aware (naive means UTC).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    usable = usable_for_smtp(records)
    if not usable:
        return DaneResult(
            False, None, "no usable TLSA records (RFC 7672 §3.1.3)", ResultType.TLSA_INVALID
        )
    if not chain_der:
        return DaneResult(
            False, None, "the server presented no certificate", ResultType.VALIDATION_FAILURE
        )
    # RFC 7672 §3.1.1: a DANE-EE match is enough; names and dates are not checked.
    for record in usable:
        if record.usage == TlsaUsage.DANE_EE and match_ee(record, chain_der[0]):
            return DaneResult(
                True, record, f"DANE-EE record {record} matched the server certificate", ""
            )
    best = _Outcome(3, "no TLSA record matches the server certificate", ResultType.TLSA_INVALID)
    best_record: TlsaRecord | None = None
    ta_records = [r for r in usable if r.usage == TlsaUsage.DANE_TA]
    if ta_records:
        chain = _Presented(chain_der)
        names = [mx_host, *reference_names]
        for record in ta_records:
            outcome = _check_ta(record, chain, names, now)
            if outcome.rank == 0:
                return DaneResult(True, record, outcome.reason, "")
            if outcome.rank < best.rank:
                best, best_record = outcome, record
    return DaneResult(False, best_record, best.reason, best.rfc8460)


def _load(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None
