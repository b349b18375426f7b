"""Secumail's CA and S/MIME signatures as an independent tool sees them: `openssl`.

RFC 8550 (certificates), RFC 8551 §3.5.3 (multipart/signed), RFC 5280 §6 (path
validation): what a recipient's mail program does, done by OpenSSL.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secumail.mail.smime import sign_message
from secumail.pki.ca import (
    CertificateAuthority,
    FileKeySigner,
    IssuedCert,
    PublicKey,
    as_private_key,
)
from tests.harness.pki import openssl

MESSAGE = (
    b"From: Jan Jansen <jan@zorg.test>\r\n"
    b"To: patient@example.test\r\n"
    b"Subject: Uw uitslag\r\n"
    b"Date: Mon, 6 Jan 2025 10:00:00 +0100\r\n"
    b"Message-ID: <uitslag-1@zorg.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Beste patient,\r\n"
    b"\r\n"
    b"Uw uitslag is goed.\r\n"
)


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority
    issued: IssuedCert

    @property
    def root(self) -> Path:
        return self.dir / "root.pem"

    @property
    def issuing(self) -> Path:
        return self.dir / "issuing.pem"

    @property
    def leaf(self) -> Path:
        return self.dir / "leaf.pem"


@pytest.fixture(scope="module", params=["ec", "rsa"])
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("ca")
    ca = CertificateAuthority.create(directory, "Zorg Noord", key_type=request.param)
    issued = ca.issue_smime("jan@zorg.test")
    (directory / "leaf.pem").write_bytes(issued.cert_pem())
    return Pki(directory, ca, issued)


def sign(pki: Pki, message: bytes = MESSAGE, issued: IssuedCert | None = None) -> bytes:
    issued = issued or pki.issued
    return sign_message(message, issued.cert, issued.key, issued.chain)


def smime_verify(pki: Pki, signed: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    return openssl("smime", "-verify", "-in", path, "-CAfile", pki.root, "-purpose", "smimesign")


def cms_verify(pki: Pki, signed: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    return openssl("cms", "-verify", "-in", path, "-CAfile", pki.root, "-purpose", "smimesign")


# --- certificates ---------------------------------------------------------------------


def test_chain_verifies_to_the_root(pki: Pki) -> None:
    result = openssl("verify", "-CAfile", pki.root, "-untrusted", pki.issuing, pki.leaf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(b": OK")


def test_chain_needs_the_issuing_ca(pki: Pki) -> None:
    result = openssl("verify", "-CAfile", pki.root, pki.leaf)
    assert result.returncode != 0


def test_leaf_verifies_for_smime_signing_only(pki: Pki) -> None:
    base = ("verify", "-CAfile", pki.root, "-untrusted", pki.issuing)
    assert openssl(*base, "-purpose", "smimesign", pki.leaf).returncode == 0
    for purpose in ("sslserver", "sslclient", "smimeencrypt"):
        assert openssl(*base, "-purpose", purpose, pki.leaf).returncode != 0, purpose


def test_openssl_purposes(pki: Pki) -> None:
    text = openssl("x509", "-in", pki.leaf, "-noout", "-purpose").stdout.decode()
    purposes = dict(line.split(" : ") for line in text.splitlines() if " : " in line)
    assert purposes["S/MIME signing"] == "Yes"
    for purpose in (
        "S/MIME signing CA",
        "SSL server",
        "SSL client",
        "S/MIME encryption",
        "CRL signing",
    ):
        assert purposes[purpose] == "No", purpose


def test_leaf_key_usage_as_openssl_reads_it(pki: Pki) -> None:
    text = openssl("x509", "-in", pki.leaf, "-noout", "-text").stdout.decode()
    usage = re.search(r"X509v3 Key Usage: critical\n\s*(.+)\n", text)
    assert usage and usage.group(1).strip() == "Digital Signature, Non Repudiation"
    assert re.search(r"Extended Key Usage: \n\s*E-mail Protection\n", text)
    assert "email:jan@zorg.test" in text
    assert re.search(r"Basic Constraints: critical\n\s*CA:FALSE", text)


def test_ca_certificates_as_openssl_reads_them(pki: Pki) -> None:
    root = openssl("x509", "-in", pki.root, "-noout", "-text").stdout.decode()
    issuing = openssl("x509", "-in", pki.issuing, "-noout", "-text").stdout.decode()
    assert re.search(r"Basic Constraints: critical\n\s*CA:TRUE, pathlen:1", root)
    assert re.search(r"Basic Constraints: critical\n\s*CA:TRUE, pathlen:0", issuing)
    for text in (root, issuing):
        assert re.search(r"Key Usage: critical\n\s*Certificate Sign, CRL Sign\n", text)
    result = openssl("verify", "-CAfile", pki.root, pki.issuing)
    assert result.returncode == 0, result.stderr


# --- signed messages ------------------------------------------------------------------


def test_openssl_smime_verifies_and_returns_the_content(pki: Pki, tmp_path: Path) -> None:
    result = smime_verify(pki, sign(pki), tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"Verification successful" in result.stderr
    body = MESSAGE.split(b"\r\n\r\n", 1)[1]
    assert result.stdout == b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body


def test_openssl_cms_verifies(pki: Pki, tmp_path: Path) -> None:
    result = cms_verify(pki, sign(pki), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"Uw uitslag is goed.\r\n")


def test_signed_message_keeps_its_headers_outside(pki: Pki) -> None:
    msg = email.message_from_bytes(sign(pki), policy=email.policy.default)
    assert msg["From"] == "Jan Jansen <jan@zorg.test>"
    assert msg["To"] == "patient@example.test"
    assert msg["Subject"] == "Uw uitslag"
    assert msg["Message-ID"] == "<uitslag-1@zorg.test>"
    assert msg.get_content_type() == "multipart/signed"
    assert len(list(msg.iter_parts())) == 2


def test_signature_includes_signing_time_and_certificates(pki: Pki, tmp_path: Path) -> None:
    msg = email.message_from_bytes(sign(pki), policy=email.policy.default)
    p7s = tmp_path / "smime.p7s"
    p7s.write_bytes(list(msg.iter_parts())[1].get_content())
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", p7s).stdout.decode()
    assert "signingTime" in printed
    assert "messageDigest" in printed
    certs = openssl("pkcs7", "-inform", "DER", "-in", p7s, "-print_certs", "-noout").stdout.decode()
    assert "subject=CN = jan@zorg.test" in certs
    assert "Secumail S/MIME Issuing CA" in certs


def test_tampered_body_fails(pki: Pki, tmp_path: Path) -> None:
    signed = sign(pki)
    tampered = signed.replace(b"Uw uitslag is goed.", b"Uw uitslag is fout.")
    assert tampered != signed
    result = smime_verify(pki, tampered, tmp_path)
    assert result.returncode != 0
    assert b"Verification successful" not in result.stderr


def test_one_changed_byte_fails(pki: Pki, tmp_path: Path) -> None:
    signed = sign(pki)
    at = signed.index(b"Beste patient")
    tampered = signed[:at] + b"b" + signed[at + 1 :]
    assert cms_verify(pki, tampered, tmp_path).returncode != 0


def test_changed_signed_part_header_fails(pki: Pki, tmp_path: Path) -> None:
    signed = sign(pki)
    # The first Content-Type after the boundary is the signed part's own.
    at = signed.index(b"Content-Type: text/plain; charset=us-ascii")
    tampered = signed[:at] + b"Content-Type: text/html; charset=us-ascii" + signed[at + 42 :]
    assert smime_verify(pki, tampered, tmp_path).returncode != 0


def test_other_root_fails(pki: Pki, tmp_path: Path) -> None:
    other = CertificateAuthority.create(tmp_path / "other", "Other")
    path = tmp_path / "signed.eml"
    path.write_bytes(sign(pki))
    other_root = tmp_path / "other-root.pem"
    other_root.write_bytes(other.root_pem())
    result = openssl("smime", "-verify", "-in", path, "-CAfile", other_root)
    assert result.returncode != 0


def test_outer_headers_are_not_covered(pki: Pki, tmp_path: Path) -> None:
    # RFC 8551 §3.1: only the first part is signed; the outer Subject is not protected.
    # (Header protection, RFC 7508/draft-ietf-lamps-header-protection, is not done.)
    tampered = sign(pki).replace(b"Subject: Uw uitslag", b"Subject: Iets anders")
    assert smime_verify(pki, tampered, tmp_path).returncode == 0


def test_8bit_message_verifies_and_decodes_to_the_original(pki: Pki, tmp_path: Path) -> None:
    letter = "Beste meneer Müller,\r\n\r\nUw uitslag is goed. Groet, Zoë\r\n"
    message = (
        MESSAGE.split(b"\r\n\r\n")[0].replace(b"us-ascii", b"utf-8")
        + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + letter.encode()
    )
    signed = sign(pki, message)
    assert signed.isascii()
    result = smime_verify(pki, signed, tmp_path)
    assert result.returncode == 0, result.stderr
    content = email.message_from_bytes(result.stdout, policy=email.policy.default)
    assert content["Content-Transfer-Encoding"] == "quoted-printable"
    assert content.get_content().replace("\r\n", "\n") == letter.replace("\r\n", "\n")


def test_lf_only_message_verifies(pki: Pki, tmp_path: Path) -> None:
    result = cms_verify(pki, sign(pki, MESSAGE.replace(b"\r\n", b"\n")), tmp_path)
    assert result.returncode == 0, result.stderr


def test_multipart_with_attachment_verifies(pki: Pki, tmp_path: Path) -> None:
    head = MESSAGE.split(b"Content-Type")[0]
    message = head + (
        b'Content-Type: multipart/mixed; boundary="grens"\r\n\r\n'
        b"--grens\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Zie bijlage, Zoë\r\n".encode()
        + b"\r\n--grens\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="uitslag.pdf"\r\n\r\n'
        b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n"
        b"\r\n--grens--\r\n"
    )
    signed = sign(pki, message)
    assert signed.isascii()
    result = smime_verify(pki, signed, tmp_path)
    assert result.returncode == 0, result.stderr
    parts = list(email.message_from_bytes(result.stdout, policy=email.policy.default).iter_parts())
    assert parts[1].get_content() == b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n"


def test_ec_leaf_verifies(pki: Pki, tmp_path: Path) -> None:
    issued = pki.ca.issue_smime("jan@zorg.test", key_type="ec")
    result = cms_verify(pki, sign(pki, issued=issued), tmp_path)
    assert result.returncode == 0, result.stderr


def test_ca_key_behind_a_signer_seam_verifies(pki: Pki, tmp_path: Path) -> None:
    # What an HSM-backed issuing key will do: the key object never leaves the Signer.
    key = serialization.load_pem_private_key(
        (pki.dir / "issuing-key.pem").read_bytes(), password=None
    )

    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)

    class OpaqueSigner:
        def __init__(self) -> None:
            self._inner = FileKeySigner(key)

        def public_key(self) -> PublicKey:
            return self._inner.public_key()

        def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
            return self._inner.sign(data, algorithm)

    ca = CertificateAuthority.load(pki.dir, issuing_signer=OpaqueSigner())
    issued = ca.issue_smime("hsm@zorg.test")
    leaf = tmp_path / "hsm-leaf.pem"
    leaf.write_bytes(issued.cert_pem())
    result = openssl("verify", "-CAfile", pki.root, "-untrusted", pki.issuing, leaf)
    assert result.returncode == 0, result.stderr
    assert cms_verify(pki, sign(pki, issued=issued), tmp_path).returncode == 0


def test_leaf_key_behind_a_signer_seam_signs_messages(pki: Pki, tmp_path: Path) -> None:
    # sign_message takes any key object; as_private_key() gives one for an opaque Signer.
    inner = FileKeySigner(pki.issued.key)

    class OpaqueSigner:
        calls = 0

        def public_key(self) -> PublicKey:
            return inner.public_key()

        def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
            OpaqueSigner.calls += 1
            return inner.sign(data, algorithm)

    issued = pki.issued
    signed = sign_message(MESSAGE, issued.cert, as_private_key(OpaqueSigner()), issued.chain)
    assert OpaqueSigner.calls == 1
    result = cms_verify(pki, signed, tmp_path)
    assert result.returncode == 0, result.stderr
