"""A private certificate authority for the fake internet.

`TestCA` makes one root CA in a directory (``ca.pem``, ``ca-key.pem``) and issues leaf
certificates from it: good, expired, not yet valid, for any names, with RSA-2048,
RSA-1024 ("weak") or EC P-256 keys, plus self-signed leaves that no client trusts.
Every certificate and key is written as PEM to the same directory under a unique
name; `CertPair` points at the files and carries the hashes DANE records need.

Clients under test trust the CA through ``TestCA.ca_file`` (Secumail: ``tls.trust_file``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

KEY_TYPES = ("rsa", "rsa1024", "ec")


@dataclass(frozen=True)
class CertPair:
    """A leaf certificate and its private key, as PEM files.

    ``fingerprint_sha256`` is the SHA-256 of the DER certificate (TLSA x 0 1) and
    ``spki_sha256`` that of its DER SubjectPublicKeyInfo (TLSA x 1 1), both lowercase hex.
    ``chain_file`` holds the leaf followed by the issuing CA (just the leaf when
    self-signed).
    """

    cert_file: Path
    key_file: Path
    fingerprint_sha256: str
    not_after: datetime
    spki_sha256: str = ""
    chain_file: Path | None = None
    names: tuple[str, ...] = ()


def openssl(
    *args: str | Path, input: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``openssl`` command, the independent implementation tests check ours
    against; output captured, a failed exit returned (not raised) for the test to judge."""
    return subprocess.run(
        ["openssl", *map(str, args)],
        input=input,
        capture_output=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


def _new_key(key: str) -> PrivateKey:
    if key == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - weak on purpose
    if key == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key!r}; expected one of {KEY_TYPES}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name.rstrip(".")))
    return x509.SubjectAlternativeName(entries)


def _leaf_extensions(
    builder: x509.CertificateBuilder, names: tuple[str, ...], key: PrivateKey
) -> x509.CertificateBuilder:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_san(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _common_name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text[:64])])


class TestCA:
    """A root CA living in ``directory``; loads it when the files already exist."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        cert_path, key_path = self.directory / "ca.pem", self.directory / "ca-key.pem"
        if cert_path.exists() and key_path.exists():
            self._cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, PrivateKey):
                raise TypeError(f"{key_path}: unsupported CA key type")
            self._key: PrivateKey = loaded
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        subject = _common_name("Secumail Harness Test Root CA")
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(self._key))
        cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_file(self) -> Path:
        """PEM file of the root certificate: the trust anchor for clients."""
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def ca_fingerprint_sha256(self) -> str:
        """SHA-256 of the root's DER form (a DANE-TA ``2 0 1`` record)."""
        return hashlib.sha256(self._cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def issue(
        self,
        *names: str,
        expired: bool = False,
        not_yet_valid: bool = False,
        key: str = "rsa",
        days_left: float | None = None,
    ) -> CertPair:
        """Issue a leaf for ``names`` (the first is also the CN), signed by this CA.

        ``expired``: validity ended yesterday. ``not_yet_valid``: starts tomorrow.
        ``key``: ``"rsa"`` (2048), ``"rsa1024"`` (weak) or ``"ec"`` (P-256).
        ``days_left``: valid from yesterday until this many days from now (default 90).
        """
        if not names:
            raise ValueError("issue() needs at least one name")
        now = datetime.now(UTC)
        if expired:
            start, end = now - timedelta(days=30), now - timedelta(days=1)
        elif not_yet_valid:
            start, end = now + timedelta(days=1), now + timedelta(days=30)
        else:
            start, end = now - timedelta(days=1), now + timedelta(days=days_left or 90)
        leaf_key = _new_key(key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_common_name(names[0]))
            .issuer_name(self._cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        cert = _leaf_extensions(builder, names, leaf_key).sign(self._key, hashes.SHA256())
        return self._save(names, cert, leaf_key, ca_pem=self.ca_file.read_bytes())

    def self_signed(self, *names: str, key: str = "rsa") -> CertPair:
        """A currently valid leaf for ``names`` that signs itself (no CA vouches for it)."""
        if not names:
            raise ValueError("self_signed() needs at least one name")
        now = datetime.now(UTC)
        leaf_key = _new_key(key)
        subject = _common_name(names[0])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=90))
        )
        cert = _leaf_extensions(builder, names, leaf_key).sign(leaf_key, hashes.SHA256())
        return self._save(names, cert, leaf_key, ca_pem=b"")

    def _save(
        self, names: tuple[str, ...], cert: x509.Certificate, key: PrivateKey, ca_pem: bytes
    ) -> CertPair:
        label = re.sub(r"[^a-z0-9.-]+", "_", names[0].lower().rstrip("."))[:60] or "leaf"
        with self._lock:
            while True:
                stem = f"{next(self._seq):03d}-{label}"
                cert_file = self.directory / f"{stem}.pem"
                if not cert_file.exists():
                    break
            cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            cert_file.write_bytes(cert_pem)
        key_file = self.directory / f"{stem}-key.pem"
        chain_file = self.directory / f"{stem}-chain.pem"
        _write_private(key_file, _key_pem(key))
        chain_file.write_bytes(cert_pem + ca_pem)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return CertPair(
            cert_file=cert_file,
            key_file=key_file,
            fingerprint_sha256=hashlib.sha256(
                cert.public_bytes(serialization.Encoding.DER)
            ).hexdigest(),
            not_after=cert.not_valid_after_utc,
            spki_sha256=hashlib.sha256(spki).hexdigest(),
            chain_file=chain_file,
            names=tuple(names),
        )
