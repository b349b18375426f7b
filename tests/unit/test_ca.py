"""Secumail's CA: root and issuing CA (RFC 5280 §4.2.1), S/MIME certificates (RFC 8550 §3, §4.4).

Independent checks with `openssl` live in tests/integration/test_smime_openssl.py.
"""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secumail.errors import ConfigError, ConflictError
from secumail.pki.ca import (
    ISSUING_CERT,
    ISSUING_KEY,
    ROOT_CERT,
    ROOT_KEY,
    CertificateAuthority,
    FileKeySigner,
    PublicKey,
    Signer,
    needs_renewal,
)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca") / "ca"
    CertificateAuthority.create(directory, "Zorg Noord")
    return directory


@pytest.fixture(scope="module")
def ca(ca_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.load(ca_dir)


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def years(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365.25


# --- the CA directory ----------------------------------------------------------------


def test_create_writes_pem_files_with_private_keys_owner_only(ca_dir: Path) -> None:
    for name in (ROOT_CERT, ISSUING_CERT):
        assert (ca_dir / name).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    for name in (ROOT_KEY, ISSUING_KEY):
        assert (ca_dir / name).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700


def test_create_is_idempotent(ca_dir: Path, ca: CertificateAuthority) -> None:
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    again = CertificateAuthority.create(ca_dir, "Another Name")
    assert again.root_pem() == ca.root_pem()
    assert again.chain_pem() == ca.chain_pem()
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before


def test_create_makes_a_missing_issuing_ca_from_the_existing_root(tmp_path: Path) -> None:
    first = CertificateAuthority.create(tmp_path, "Zorg")
    (tmp_path / ISSUING_CERT).unlink()
    (tmp_path / ISSUING_KEY).unlink()
    second = CertificateAuthority.create(tmp_path, "Zorg")
    assert second.root_pem() == first.root_pem()
    assert second.issuing.serial_number != first.issuing.serial_number
    second.issuing.verify_directly_issued_by(first.root)


def test_root_certificate(ca: CertificateAuthority) -> None:
    root = ca.root
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Zorg Noord"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert ext(root, x509.SubjectKeyIdentifier).value.digest
    assert 9.9 < years(root) < 10.1
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert isinstance(root.signature_hash_algorithm, hashes.SHA384)


def test_issuing_certificate(ca: CertificateAuthority) -> None:
    issuing = ca.issuing
    issuing.verify_directly_issued_by(ca.root)
    bc = ext(issuing, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(issuing, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    root_ski = ext(ca.root, x509.SubjectKeyIdentifier).value.digest
    assert ext(issuing, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    assert 4.9 < years(issuing) < 5.1
    assert issuing.not_valid_after_utc <= ca.root.not_valid_after_utc


def test_rsa_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "Zorg", key_type="rsa")
    for cert in (ca.root, ca.issuing):
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    ca.issue_smime("a@zorg.test").cert.verify_directly_issued_by(ca.issuing)


def test_root_pem_and_chain_pem(ca: CertificateAuthority) -> None:
    assert x509.load_pem_x509_certificate(ca.root_pem()) == ca.root
    assert x509.load_pem_x509_certificates(ca.chain_pem()) == [ca.issuing]


def test_load_does_not_need_the_root_key(ca_dir: Path, tmp_path: Path) -> None:
    # The root key may live offline once the issuing CA exists.
    for name in (ROOT_CERT, ISSUING_CERT, ISSUING_KEY):
        (tmp_path / name).write_bytes((ca_dir / name).read_bytes())
    ca = CertificateAuthority.load(tmp_path)
    ca.issue_smime("a@zorg.test").cert.verify_directly_issued_by(ca.issuing)


def test_load_refuses_an_issuing_key_of_another_certificate(ca_dir: Path, tmp_path: Path) -> None:
    for name in (ROOT_CERT, ISSUING_CERT):
        (tmp_path / name).write_bytes((ca_dir / name).read_bytes())
    (tmp_path / ISSUING_KEY).write_bytes((ca_dir / ROOT_KEY).read_bytes())
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority.load(tmp_path)


def test_load_refuses_an_issuing_ca_of_another_root(ca_dir: Path, tmp_path: Path) -> None:
    other = CertificateAuthority.create(tmp_path / "other", "Other")
    for name in (ISSUING_CERT, ISSUING_KEY):
        (tmp_path / name).write_bytes((ca_dir / name).read_bytes())
    (tmp_path / ROOT_CERT).write_bytes(other.root_pem())
    with pytest.raises(ConfigError, match="not signed by the root"):
        CertificateAuthority.load(tmp_path)


def test_load_of_an_empty_directory_says_which_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(ROOT_CERT)):
        CertificateAuthority.load(tmp_path)


# --- S/MIME certificates -------------------------------------------------------------


def test_smime_certificate(ca: CertificateAuthority) -> None:
    issued = ca.issue_smime("Jan.Jansen@Zorg.test")
    cert = issued.cert
    cert.verify_directly_issued_by(ca.issuing)
    assert cert.issuer == ca.issuing.subject
    # RFC 8550 §3: the address in subjectAltName rfc822Name; domain normalised.
    assert cert.subject.rfc4514_string() == "CN=Jan.Jansen@zorg.test"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["Jan.Jansen@zorg.test"]
    # RFC 8550 §4.4.2: digitalSignature (and nonRepudiation) for signing; nothing else.
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.content_commitment
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.key_encipherment)
    # RFC 8550 §4.4.4: emailProtection.
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        issued.key.public_key()
    )
    issuing_ski = ext(ca.issuing, x509.SubjectKeyIdentifier).value.digest
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == issuing_ski
    assert isinstance(issued.key, rsa.RSAPrivateKey) and issued.key.key_size == 2048
    assert issued.chain == [ca.issuing]


def test_smime_certificate_is_short_lived(ca: CertificateAuthority) -> None:
    now = datetime.now(UTC)
    cert = ca.issue_smime("a@zorg.test", days=3).cert
    assert now + timedelta(days=3) - timedelta(minutes=1) <= cert.not_valid_after_utc
    assert cert.not_valid_after_utc <= now + timedelta(days=3, minutes=1)
    assert cert.not_valid_before_utc <= now  # backdated a little for clock skew


def test_smime_certificate_with_ec_key(ca: CertificateAuthority) -> None:
    issued = ca.issue_smime("a@zorg.test", key_type="ec")
    assert isinstance(issued.key, ec.EllipticCurvePrivateKey)
    assert issued.key.curve.name == "secp256r1"


def test_every_certificate_has_its_own_key_and_serial(ca: CertificateAuthority) -> None:
    a, b = ca.issue_smime("a@zorg.test"), ca.issue_smime("a@zorg.test")
    assert a.cert.serial_number != b.cert.serial_number
    assert a.cert.public_key() != b.cert.public_key()


def test_long_address_goes_in_email_address_attribute(ca: CertificateAuthority) -> None:
    # X.520 ub-common-name is 64; RFC 8550 §3 receivers also read PKCS #9 emailAddress.
    address = "a" * 60 + "@zorg.test"
    cert = ca.issue_smime(address).cert
    assert cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == address
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [address]


def test_idn_domain_becomes_a_label(ca: CertificateAuthority) -> None:
    cert = ca.issue_smime("info@xn--bcher-kva.test").cert
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["info@xn--bcher-kva.test"]


@pytest.mark.parametrize(
    "address",
    ["", "no-at-sign", "a@", "@zorg.test", "a b@zorg.test", "jöran@zorg.test", "a@zorg..test"],
)
def test_invalid_address_is_refused(ca: CertificateAuthority, address: str) -> None:
    with pytest.raises(ValueError):
        ca.issue_smime(address)


@pytest.mark.parametrize("days", [0, -1, 826])
def test_validity_out_of_range_is_refused(ca: CertificateAuthority, days: int) -> None:
    with pytest.raises(ValueError, match="days"):
        ca.issue_smime("a@zorg.test", days=days)


def test_unknown_key_type_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key type"):
        ca.issue_smime("a@zorg.test", key_type="dsa")
    with pytest.raises(ValueError, match="key type"):
        CertificateAuthority.create(tmp_path, "Zorg", key_type="ed25519")


def test_issued_cert_pem_round_trip(ca: CertificateAuthority) -> None:
    issued = ca.issue_smime("a@zorg.test")
    assert x509.load_pem_x509_certificate(issued.cert_pem()) == issued.cert
    key = serialization.load_pem_private_key(issued.key_pem(), password=None)
    assert key.public_key() == issued.key.public_key()
    assert x509.load_pem_x509_certificates(issued.chain_pem()) == [ca.issuing]


def test_needs_renewal(ca: CertificateAuthority) -> None:
    cert = ca.issue_smime("a@zorg.test", days=30).cert
    end = cert.not_valid_after_utc
    assert not needs_renewal(cert, end - timedelta(days=8))
    assert needs_renewal(cert, end - timedelta(days=7))
    assert needs_renewal(cert, end + timedelta(days=1))
    assert not needs_renewal(cert, end - timedelta(days=2), margin_days=1)
    with pytest.raises(ValueError, match="timezone"):
        needs_renewal(cert, datetime.now())  # naive on purpose


# --- the signing seam ----------------------------------------------------------------


class RecordingSigner:
    """Stands in for a PKCS#11 key: signs, never hands out the private key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self._inner = FileKeySigner(key)
        self.calls: list[str] = []

    def public_key(self) -> PublicKey:
        return self._inner.public_key()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
        self.calls.append(algorithm.name if algorithm else "none")
        return self._inner.sign(data, algorithm)


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_issuing_key_can_be_any_signer(tmp_path: Path, key_type: str) -> None:
    CertificateAuthority.create(tmp_path, "Zorg", key_type=key_type)
    key = serialization.load_pem_private_key((tmp_path / ISSUING_KEY).read_bytes(), password=None)
    (tmp_path / ISSUING_KEY).unlink()  # the HSM holds it now
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    signer = RecordingSigner(key)
    assert isinstance(signer, Signer)
    ca = CertificateAuthority.load(tmp_path, issuing_signer=signer)
    cert = ca.issue_smime("a@zorg.test").cert
    cert.verify_directly_issued_by(ca.issuing)
    assert signer.calls == ["sha384" if key_type == "ec" else "sha256"]


def test_a_signer_for_another_key_is_refused(ca_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority.load(
            ca_dir, issuing_signer=RecordingSigner(ec.generate_private_key(ec.SECP384R1()))
        )


def test_file_key_signer_reports_unreadable_key(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match=r"k\.pem"):
        FileKeySigner.load(tmp_path / "k.pem")


# --- an operator's own root -----------------------------------------------------------


def _operator_root(path_length: int | None = 1, ca: bool = True) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gemeente Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Gemeente Test Root"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_import_root(tmp_path: Path) -> None:
    cert_pem, key_pem = _operator_root()
    ca = CertificateAuthority.import_root(tmp_path, cert_pem, key_pem)
    assert ca.root_pem() == cert_pem
    ca.issuing.verify_directly_issued_by(ca.root)
    assert ca.issuing.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Gemeente Test"
    )
    assert stat.S_IMODE((tmp_path / ROOT_KEY).stat().st_mode) == 0o600
    ca.issue_smime("a@gemeente.test").cert.verify_directly_issued_by(ca.issuing)
    assert CertificateAuthority.load(tmp_path).root_pem() == cert_pem


def test_import_root_refuses_to_replace_a_ca(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path, "Zorg")
    with pytest.raises(ConflictError):
        CertificateAuthority.import_root(tmp_path, *_operator_root())


@pytest.mark.parametrize(("path_length", "is_ca"), [(0, True), (None, False)])
def test_import_root_refuses_what_cannot_certify_a_ca(
    tmp_path: Path, path_length: int | None, is_ca: bool
) -> None:
    with pytest.raises(ConfigError):
        CertificateAuthority.import_root(tmp_path, *_operator_root(path_length, is_ca))
    assert not (tmp_path / ROOT_CERT).exists()


def test_import_root_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    cert_pem, _ = _operator_root()
    _, other_key = _operator_root()
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority.import_root(tmp_path, cert_pem, other_key)
