"""Secumail's own certificate authority for S/MIME signing certificates.

A CA directory holds two CA certificates, as PEM:

    root.pem          self-signed root, 10 years, CA:TRUE pathlen 1 (customers import it)
    root-key.pem      its private key (mode 0600; may be moved offline once the
                      issuing CA exists: `load` does not need it)
    issuing.pem       issuing CA signed by the root, 5 years, CA:TRUE pathlen 0
    issuing-key.pem   its private key (mode 0600), used for every end-entity certificate

End-entity certificates follow RFC 8550 §3 and §4.4: one address, in subjectAltName
rfc822Name (and the subject CN), keyUsage digitalSignature + nonRepudiation, extended key
usage emailProtection, short validity.

CA keys sign through the `Signer` seam: anything with `public_key()` and
`sign(data, algorithm)`. `FileKeySigner` keeps a PEM key in memory; a PKCS#11 (HSM)
signer implements the same two methods and is passed to `CertificateAuthority.load`.
`cryptography`'s certificate and CMS builders call `sign()` on the key object they are
given, so `as_private_key()` wraps any `Signer` in the key interface they expect.

Errors: `ConfigError` for a CA directory that cannot be used, `ConflictError` for an
import over an existing CA, `ValueError` (`AddressError`) for bad arguments.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secumail.errors import ConfigError, ConflictError
from secumail.keyfiles import write_file
from secumail.mail.address import parse_address

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ROOT_CERT, ROOT_KEY = "root.pem", "root-key.pem"
ISSUING_CERT, ISSUING_KEY = "issuing.pem", "issuing-key.pem"

ROOT_YEARS = 10
ISSUING_YEARS = 5
MAX_LEAF_DAYS = 825  # CA/Browser Forum S/MIME Baseline Requirements §6.3.2
CA_KEY_TYPES = ("ec", "rsa")  # EC P-384, RSA-3072
LEAF_KEY_TYPES = ("rsa", "ec")  # RSA-2048, EC P-256 (RFC 8551 §2.2 MUST algorithms)
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences at the verifier


# --- the signing seam -----------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """A private key that signs but need not reveal itself (file key, PKCS#11 object).

    `sign(data, algorithm)` signs the whole `data` (it hashes itself) and returns the
    signature as X.509 and CMS carry it: RSA PKCS#1 v1.5, ECDSA as DER, Ed25519 raw
    (`algorithm` is None for Ed25519).
    """

    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes: ...


class FileKeySigner:
    """A `Signer` over a private key held in memory, read from a PEM file or made here."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key

    @classmethod
    def load(cls, path: Path, password: bytes | None = None) -> FileKeySigner:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=password)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read private key {path}: {exc}") from exc
        if not isinstance(
            key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ConfigError(f"{path}: unsupported key type {type(key).__name__}")
        return cls(key)

    @property
    def private_key(self) -> PrivateKey:
        return self._key

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, PKCS1v15(), _need_hash(algorithm))
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(_need_hash(algorithm)))
        return key.sign(data)


def _need_hash(algorithm: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm:
    if algorithm is None:
        raise ValueError("RSA and ECDSA signatures need a hash algorithm")
    return algorithm


class _SignerRsaKey(rsa.RSAPrivateKey):
    """An `RSAPrivateKey` face on a `Signer`, for cryptography's builders."""

    def __init__(self, signer: Signer) -> None:
        public = signer.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError(f"not an RSA key: {type(public).__name__}")
        self._signer = signer
        self._public = public

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: asym_utils.Prehashed | hashes.HashAlgorithm | asym_utils.NoDigestInfo,
    ) -> bytes:
        if not isinstance(padding, PKCS1v15) or not isinstance(algorithm, hashes.HashAlgorithm):
            raise ValueError("a Signer makes PKCS#1 v1.5 signatures over whole data only")
        return self._signer.sign(data, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise NotImplementedError("a Signer only signs")

    def private_numbers(self) -> NoReturn:
        raise NotImplementedError("a Signer does not reveal its key")

    def private_bytes(self, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("a Signer does not reveal its key")

    def __copy__(self) -> _SignerRsaKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _SignerRsaKey:
        return self


class _SignerEcKey(ec.EllipticCurvePrivateKey):
    """An `EllipticCurvePrivateKey` face on a `Signer`, for cryptography's builders."""

    def __init__(self, signer: Signer) -> None:
        public = signer.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError(f"not an EC key: {type(public).__name__}")
        self._signer = signer
        self._public = public

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if not isinstance(signature_algorithm, ec.ECDSA) or not isinstance(
            algorithm, hashes.HashAlgorithm
        ):
            raise ValueError("a Signer makes ECDSA signatures over whole data only")
        return self._signer.sign(bytes(data), algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError("a Signer only signs")

    def private_numbers(self) -> NoReturn:
        raise NotImplementedError("a Signer does not reveal its key")

    def private_bytes(self, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("a Signer does not reveal its key")

    def __copy__(self) -> _SignerEcKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _SignerEcKey:
        return self


def as_private_key(signer: Signer) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The key object cryptography's X.509/CMS builders take, signing through `signer`."""
    if isinstance(signer, FileKeySigner) and not isinstance(
        signer.private_key, ed25519.Ed25519PrivateKey
    ):
        return signer.private_key
    public = signer.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return _SignerRsaKey(signer)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _SignerEcKey(signer)
    raise ValueError(f"a CA key must be RSA or EC, not {type(public).__name__}")


def _hash_for(public: PublicKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(public, ec.EllipticCurvePublicKey) and public.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


# --- certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCert:
    """An end-entity certificate, its private key and the CA certificates above it
    (issuing CA first, root not included)."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def needs_renewal(cert: x509.Certificate, now: datetime, margin_days: int = 7) -> bool:
    """True when `cert` expires within `margin_days` of `now` (or has expired)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now >= cert.not_valid_after_utc - timedelta(days=margin_days)


class CertificateAuthority:
    """The root and issuing CA of one Secumail installation."""

    def __init__(
        self,
        root: x509.Certificate,
        issuing: x509.Certificate,
        issuing_signer: Signer,
    ) -> None:
        check_pair(issuing, issuing_signer, "issuing CA")
        try:
            issuing.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ConfigError(f"the issuing CA is not signed by the root: {exc}") from exc
        self.root = root
        self.issuing = issuing
        self._signer = issuing_signer

    # -- construction

    @classmethod
    def create(
        cls, directory: Path, org_name: str, *, key_type: str = "ec"
    ) -> CertificateAuthority:
        """Make the root and issuing CA in `directory`; load them if they exist already.

        Idempotent: existing files are kept, a missing issuing CA is made from an
        existing root and its key.
        """
        check_new_ca(org_name, key_type)
        with root_ready(directory, org_name, key_type) as directory:
            if not (directory / ISSUING_CERT).exists():
                _make_issuing(directory, org_name, key_type)
        return cls.load(directory)

    @classmethod
    def import_root(
        cls,
        directory: Path,
        root_cert_pem: bytes,
        root_key_pem: bytes,
        *,
        password: bytes | None = None,
        org_name: str | None = None,
        key_type: str = "ec",
    ) -> CertificateAuthority:
        """Use an operator's CA certificate and key as the root; make the issuing CA.

        The certificate must be a CA allowed to sign CA certificates (CA:TRUE with a
        path length of at least 1, or none, and keyCertSign). Refused over an existing CA.
        """
        if key_type not in CA_KEY_TYPES:
            raise ValueError(f"unknown CA key type {key_type!r}; expected one of {CA_KEY_TYPES}")
        try:
            root = x509.load_pem_x509_certificate(root_cert_pem)
            root_key = serialization.load_pem_private_key(root_key_pem, password=password)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the operator's root CA: {exc}") from exc
        if not isinstance(root_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError("the operator's root key must be RSA or EC")
        check_pair(root, FileKeySigner(root_key), "operator root CA")
        _check_can_issue_ca(root)
        org = org_name or _first(root.subject, NameOID.ORGANIZATION_NAME) or "Secumail"
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(directory):
            if (directory / ROOT_CERT).exists() or (directory / ISSUING_CERT).exists():
                raise ConflictError(f"{directory} holds a CA already")
            _write(directory / ROOT_KEY, _key_pem(root_key), private=True)
            _write(directory / ROOT_CERT, _cert_pem(root))
            _make_issuing(directory, org, key_type)
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path, *, issuing_signer: Signer | None = None) -> CertificateAuthority:
        """Read a CA directory. `issuing_signer` replaces issuing-key.pem (e.g. an HSM key)."""
        directory = Path(directory)
        root = read_cert(directory / ROOT_CERT)
        issuing = read_cert(directory / ISSUING_CERT)
        signer = issuing_signer or FileKeySigner.load(directory / ISSUING_KEY)
        return cls(root, issuing, signer)

    # -- what customers and signers need

    def root_pem(self) -> bytes:
        """The root certificate, for recipients and customers to import as a trust anchor."""
        return _cert_pem(self.root)

    def chain_pem(self) -> bytes:
        """The CA certificates a signed message carries: the issuing CA (and an imported
        root that is itself not self-signed)."""
        return b"".join(_cert_pem(c) for c in self._chain())

    def _chain(self) -> list[x509.Certificate]:
        chain = [self.issuing]
        if self.root.issuer != self.root.subject:
            chain.append(self.root)
        return chain

    def issue_smime(self, address: str, *, days: int = 30, key_type: str = "rsa") -> IssuedCert:
        """A new key and S/MIME signing certificate for one address (RFC 8550 §3, §4.4)."""
        if key_type not in LEAF_KEY_TYPES:
            raise ValueError(f"unknown key type {key_type!r}; expected one of {LEAF_KEY_TYPES}")
        if not 1 <= days <= MAX_LEAF_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_LEAF_DAYS}")
        # RFC 8550 §3: an ASCII rfc822Name (internationalised local parts would need the
        # RFC 8398 SmtpUTF8Mailbox name form, not supported); domain as A-labels.
        mailbox = str(parse_address(address))
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        not_after = min(now + timedelta(days=days), self.issuing.not_valid_after_utc)
        if not_after <= now:
            raise ConfigError("the issuing CA has expired; renew it before issuing")
        # X.520 ub-common-name is 64: a longer address goes in PKCS #9 emailAddress.
        subject_attr = (
            x509.NameAttribute(NameOID.COMMON_NAME, mailbox)
            if len(mailbox) <= 64
            else x509.NameAttribute(NameOID.EMAIL_ADDRESS, mailbox)
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([subject_attr]))
            .issuer_name(self.issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, content_commitment=True), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mailbox)]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(_aki(self.issuing), critical=False)
            .sign(as_private_key(self._signer), _hash_for(self._signer.public_key()))
        )
        return IssuedCert(cert=cert, key=key, chain=self._chain())


# --- building the CA ------------------------------------------------------------------
# The steps every way of making a CA directory shares (a file issuing key here, an HSM
# issuing key in `pki.ca_hsm`): check the arguments, make the root when missing, certify
# an issuing key with the root.


def check_new_ca(org_name: str, key_type: str) -> None:
    """ValueError for a CA key type or organisation name a new CA cannot have."""
    if key_type not in CA_KEY_TYPES:
        raise ValueError(f"unknown CA key type {key_type!r}; expected one of {CA_KEY_TYPES}")
    if not org_name.strip():
        raise ValueError("org_name must not be empty")


@contextmanager
def root_ready(directory: Path, org_name: str, key_type: str) -> Iterator[Path]:
    """`directory`, locked against other processes, with a root CA in it: the existing
    one, or a new self-signed root with a file key of `key_type`."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(directory):
        if not (directory / ROOT_CERT).exists():
            if (directory / ISSUING_CERT).exists():
                raise ConfigError(f"{directory}: {ISSUING_CERT} exists without {ROOT_CERT}")
            root_key = _new_ca_key(key_type)
            root = _self_signed_root(root_key, org_name)
            _write(directory / ROOT_KEY, _key_pem(root_key), private=True)
            _write(directory / ROOT_CERT, _cert_pem(root))
        yield directory


def certify_issuing(directory: Path, org_name: str, public: PublicKey) -> x509.Certificate:
    """An issuing CA certificate for `public`, signed by the root (and its key) in
    `directory`; the caller writes it (after its key, where that is a file)."""
    root = read_cert(directory / ROOT_CERT)
    root_signer = FileKeySigner.load(directory / ROOT_KEY)
    check_pair(root, root_signer, "root CA")
    # Never outlive the root (an imported root may expire sooner than five years).
    not_after = min(_years_from_now(ISSUING_YEARS), root.not_valid_after_utc)
    if not_after <= datetime.now(UTC) + timedelta(days=1):
        raise ConfigError("the root CA expires within a day: it cannot certify an issuing CA")
    name = _ca_name(org_name, "Secumail S/MIME Issuing CA")
    return (
        _ca_builder(name, public, not_after, path_length=0)
        .issuer_name(root.subject)
        .add_extension(_aki(root), critical=False)
        .sign(as_private_key(root_signer), _hash_for(root_signer.public_key()))
    )


def write_issuing_cert(directory: Path, cert: x509.Certificate) -> None:
    _write(directory / ISSUING_CERT, _cert_pem(cert))


def _new_ca_key(key_type: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP384R1())


def _key_usage(
    *, digital_signature: bool = False, content_commitment: bool = False, cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        public = issuer.public_key()
        if not isinstance(public, PublicKey):
            raise ConfigError(f"unsupported CA key type {type(public).__name__}") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)


def _years_from_now(years: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=365 * years + years // 4)


def _ca_builder(
    subject: x509.Name, public: PublicKey, not_after: datetime, path_length: int
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.9, §4.2.1.3: CA:TRUE critical; keyCertSign and cRLSign.
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _ca_name(org_name: str, role: str) -> x509.Name:
    cn = f"{org_name} {role}"
    if len(cn) > 64:
        cn = cn[-64:].lstrip()
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _self_signed_root(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, org_name: str
) -> x509.Certificate:
    name = _ca_name(org_name, "Secumail Root CA")
    return (
        _ca_builder(name, key.public_key(), _years_from_now(ROOT_YEARS), path_length=1)
        .issuer_name(name)
        .sign(key, _hash_for(key.public_key()))
    )


def _make_issuing(directory: Path, org_name: str, key_type: str) -> None:
    """An issuing CA with a new file key."""
    key = _new_ca_key(key_type)
    cert = certify_issuing(directory, org_name, key.public_key())
    _write(directory / ISSUING_KEY, _key_pem(key), private=True)
    write_issuing_cert(directory, cert)


def check_pair(cert: x509.Certificate, signer: Signer, what: str) -> None:
    """ConfigError unless `signer` holds the private key of `cert` (`what` names it)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != signer.public_key().public_bytes(der, spki):
        raise ConfigError(f"the {what} key does not belong to its certificate")


def _check_can_issue_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ConfigError(f"the operator's root CA lacks an extension: {exc}") from exc
    if not bc.ca or not ku.key_cert_sign:
        raise ConfigError("the operator's root is not a CA certificate (CA:TRUE, keyCertSign)")
    if bc.path_length is not None and bc.path_length < 1:
        raise ConfigError("the operator's root has pathlen 0: it cannot certify an issuing CA")


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else None


# --- files ----------------------------------------------------------------------------


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def read_cert(path: Path) -> x509.Certificate:
    """A CA certificate from a PEM file (ConfigError when it cannot be read)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CA certificate {path}: {exc}") from exc


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (temporary file, fsync, rename); keys readable by the owner only."""
    write_file(path, data, private=private)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise `create`/`import_root` between processes on one host."""
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
