"""The harness CA issues certificates that real TLS clients judge as intended.

Handshakes run in memory (ssl.MemoryBIO), with Python's default client verification.
"""

from __future__ import annotations

import hashlib
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.harness.pki import CertPair, TestCA


def handshake(ca: TestCA, pair: CertPair, server_hostname: str) -> ssl.SSLObject:
    """A TLS handshake between a verifying client (trusting ``ca``) and ``pair``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so even the weak key loads
    server_ctx.load_cert_chain(pair.cert_file, pair.key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = True
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                done = False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done:
            return client
    raise AssertionError("handshake did not finish")


def verify_error(ca: TestCA, pair: CertPair, name: str) -> str:
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        handshake(ca, pair, name)
    return failure.value.verify_message


def test_root_is_a_ca_certificate(test_ca: TestCA) -> None:
    root = x509.load_pem_x509_certificate(test_ca.ca_file.read_bytes())
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.critical and constraints.value.ca
    assert usage.key_cert_sign and usage.crl_sign
    assert root.not_valid_before_utc < datetime.now(UTC) < root.not_valid_after_utc


def test_ca_is_made_once_per_directory(tmp_path: Path) -> None:
    first = TestCA(tmp_path)
    again = TestCA(tmp_path)
    assert again.ca_fingerprint_sha256 == first.ca_fingerprint_sha256
    pair = again.issue("reload.example.test")
    assert handshake(first, pair, "reload.example.test").version() == "TLSv1.3"


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_issued_certificate_verifies_for_each_name(test_ca: TestCA, key: str) -> None:
    pair = test_ca.issue("mx1.example.test", "mx.example.test", key=key)
    for name in ("mx1.example.test", "mx.example.test"):
        client = handshake(test_ca, pair, name)
        subject = dict(item[0] for item in client.getpeercert()["subject"])
        assert subject["commonName"] == "mx1.example.test"


def test_leaf_carries_server_and_client_auth(test_ca: TestCA) -> None:
    cert = x509.load_pem_x509_certificate(test_ca.issue("eku.example.test").cert_file.read_bytes())
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {x509.OID_SERVER_AUTH, x509.OID_CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_hashes_match_what_the_client_sees(test_ca: TestCA) -> None:
    pair = test_ca.issue("dane.example.test")
    der = handshake(test_ca, pair, "dane.example.test").getpeercert(binary_form=True)
    assert pair.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert pair.spki_sha256 == hashlib.sha256(spki).hexdigest()


def test_expired_certificate_is_refused(test_ca: TestCA) -> None:
    pair = test_ca.issue("old.example.test", expired=True)
    assert pair.not_after < datetime.now(UTC)
    assert verify_error(test_ca, pair, "old.example.test") == "certificate has expired"


def test_not_yet_valid_certificate_is_refused(test_ca: TestCA) -> None:
    pair = test_ca.issue("new.example.test", not_yet_valid=True)
    assert verify_error(test_ca, pair, "new.example.test") == "certificate is not yet valid"


def test_wrong_name_is_refused(test_ca: TestCA) -> None:
    pair = test_ca.issue("mx1.example.test")
    message = verify_error(test_ca, pair, "mx2.example.test")
    assert message == "Hostname mismatch, certificate is not valid for 'mx2.example.test'."


def test_self_signed_certificate_is_refused(test_ca: TestCA) -> None:
    pair = test_ca.self_signed("mx1.example.test")
    assert verify_error(test_ca, pair, "mx1.example.test") == "self-signed certificate"


def test_weak_key_is_refused_at_default_security_level(test_ca: TestCA) -> None:
    pair = test_ca.issue("weak.example.test", key="rsa1024")
    assert verify_error(test_ca, pair, "weak.example.test") == "EE certificate key too weak"


def test_files_are_unique_and_keys_private(test_ca: TestCA) -> None:
    first = test_ca.issue("same.example.test")
    second = test_ca.issue("same.example.test")
    assert len({first.cert_file, first.key_file, second.cert_file, second.key_file}) == 4
    assert first.fingerprint_sha256 != second.fingerprint_sha256
    assert first.key_file.stat().st_mode & 0o077 == 0
    assert second.chain_file is not None
    assert second.chain_file.read_bytes().endswith(test_ca.ca_file.read_bytes())


def test_unknown_key_type_is_an_error(test_ca: TestCA) -> None:
    with pytest.raises(ValueError, match="unknown key type"):
        test_ca.issue("x.example.test", key="dsa")
