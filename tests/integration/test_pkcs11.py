"""Keys on a PKCS#11 token, against a real SoftHSM2 (no mocks).

Signatures made on the token are checked with `cryptography` and `openssl`: RSA PKCS#1
v1.5 (RFC 8017 §8.2), ECDSA as DER (RFC 5480 §2.2.3), Ed25519 (RFC 8032 §5.1). A CA whose
issuing key is on the token issues S/MIME certificates that `openssl verify` accepts
(RFC 5280 §6) and whose messages `openssl smime -verify` accepts (RFC 8551 §3.5.3);
evidence signed on the token passes `verify_evidence` and the documented openssl check.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secumail.errors import ConfigError, ConflictError
from secumail.mail.smime import sign_message
from secumail.pki.ca import CertificateAuthority, FileKeySigner, IssuedCert, as_private_key
from secumail.pki.ca_hsm import create_with_hsm_issuing_key
from secumail.pki.evidence import EvidenceKey, sign_evidence, verify_evidence
from secumail.pki.pkcs11_signer import (
    Pkcs11Config,
    Pkcs11Signer,
    generate_keypair,
    open_signer,
)
from secumail.pki.pkcs11_token import load_module, module_gate
from tests.harness.pki import openssl
from tests.harness.softhsm import SoftHsmToken, init_token, softhsm_token, write_conf

ROOT = Path(__file__).resolve().parents[2]
DATA = b"Uw uitslag is goed. " * 50
MESSAGE = (
    b"From: Jan Jansen <jan@zorg.test>\r\n"
    b"To: patient@example.test\r\n"
    b"Subject: Uw uitslag\r\n"
    b"Date: Mon, 6 Jan 2025 10:00:00 +0100\r\n"
    b"Message-ID: <uitslag-hsm@zorg.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Uw uitslag is goed.\r\n"
)
RECORD = {
    "message_id": "<uitslag-hsm@zorg.test>",
    "recipient": "patient@example.test",
    "route": "dane",
    "remote_reply": "250 2.0.0 Ok: queued",
}


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens() -> tuple[SoftHsmToken, SoftHsmToken]:
    """Two tokens, both made before any session is open (a token added later makes the
    module re-initialise, which the recovery test does on purpose)."""
    return softhsm_token(), softhsm_token()


@pytest.fixture(scope="module")
def hsm(tokens: tuple[SoftHsmToken, SoftHsmToken]) -> SoftHsmToken:
    return tokens[0]


@pytest.fixture(scope="module")
def config(hsm: SoftHsmToken) -> Pkcs11Config:
    return Pkcs11Config(hsm.module, hsm.label, hsm.pin)


@pytest.fixture(scope="module")
def keys(config: Pkcs11Config) -> Iterator[dict[str, Pkcs11Signer]]:
    """RSA-2048, EC P-384 and Ed25519 keys made on the token, opened as signers."""
    signers = {}
    for key_type in ("rsa-2048", "ec-p384", "ed25519"):
        generate_keypair(config, f"test-{key_type}", key_type)
        signers[key_type] = open_signer(config, f"test-{key_type}")
    yield signers
    for signer in signers.values():
        signer.close()


# --- keys and signatures --------------------------------------------------------------


def test_generated_keys_have_the_requested_type(config: Pkcs11Config) -> None:
    rsa_public = generate_keypair(config, "fresh-rsa", "rsa-2048")
    ec_public = generate_keypair(config, "fresh-ec", "ec-p384")
    ed_public = generate_keypair(config, "fresh-ed", "ed25519")
    assert isinstance(rsa_public, rsa.RSAPublicKey) and rsa_public.key_size == 2048
    assert rsa_public.public_numbers().e == 65537
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    assert isinstance(ec_public.curve, ec.SECP384R1)
    assert isinstance(ed_public, ed25519.Ed25519PublicKey)
    # The signer reads the same public key back from the token.
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for label, public in (("fresh-rsa", rsa_public), ("fresh-ec", ec_public)):
        with open_signer(config, label) as signer:
            assert signer.public_key().public_bytes(*spki) == public.public_bytes(*spki)
    with open_signer(config, "fresh-ed") as signer:
        raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert signer.public_key().public_bytes(*raw) == ed_public.public_bytes(*raw)


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384()], ids=["sha256", "sha384"])
def test_rsa_pkcs1v15_signature_verifies(
    keys: dict[str, Pkcs11Signer], algorithm: hashes.HashAlgorithm
) -> None:
    signer = keys["rsa-2048"]
    signature = signer.sign(DATA, algorithm)
    assert len(signature) == 256
    public = signer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, DATA, PKCS1v15(), algorithm)
    with pytest.raises(InvalidSignature):
        public.verify(signature, DATA + b".", PKCS1v15(), algorithm)


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384()], ids=["sha256", "sha384"])
def test_ecdsa_signature_is_der_and_verifies(
    keys: dict[str, Pkcs11Signer], algorithm: hashes.HashAlgorithm
) -> None:
    signer = keys["ec-p384"]
    signature = signer.sign(DATA, algorithm)
    r, s = decode_dss_signature(signature)  # DER Ecdsa-Sig-Value, not the token's r || s
    assert r > 0 and s > 0
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, DATA, ec.ECDSA(algorithm))
    with pytest.raises(InvalidSignature):
        public.verify(signature, DATA + b".", ec.ECDSA(algorithm))


def test_ed25519_signature_verifies(keys: dict[str, Pkcs11Signer]) -> None:
    signer = keys["ed25519"]
    signature = signer.sign(DATA, None)
    assert len(signature) == 64
    assert signer.sign(DATA, None) == signature  # RFC 8032: deterministic
    public = signer.public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, DATA)
    with pytest.raises(InvalidSignature):
        public.verify(signature, DATA + b".")


def test_signing_refuses_a_wrong_hash_argument(keys: dict[str, Pkcs11Signer]) -> None:
    with pytest.raises(ValueError, match="algorithm=None"):
        keys["ed25519"].sign(DATA, hashes.SHA256())
    with pytest.raises(ValueError, match="need a hash"):
        keys["rsa-2048"].sign(DATA, None)
    with pytest.raises(ValueError, match="not sha1"):
        keys["ec-p384"].sign(DATA, hashes.SHA1())  # noqa: S303 - refused on purpose


def test_private_keys_stay_on_the_token(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer]
) -> None:
    import pkcs11

    attribute = pkcs11.Attribute
    with module_gate(config.module):
        token = load_module(config.module).get_token(token_label=config.token_label)
        with token.open() as session:  # logged in already through the signers
            for label in ("test-rsa-2048", "test-ec-p384", "test-ed25519"):
                key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)
                assert key[attribute.SENSITIVE] is True
                assert key[attribute.EXTRACTABLE] is False
                assert key[attribute.NEVER_EXTRACTABLE] is True
                assert key[attribute.SIGN] is True
                assert key[attribute.DECRYPT] is False
                with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                    key[attribute.VALUE if label != "test-rsa-2048" else attribute.PRIVATE_EXPONENT]


def test_generating_over_an_existing_label_is_refused(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer]
) -> None:
    with pytest.raises(ConflictError, match="test-ed25519"):
        generate_keypair(config, "test-ed25519", "ed25519")
    with pytest.raises(ValueError, match="unknown key type"):
        generate_keypair(config, "x", "dsa-1024")


def test_uri_names_the_key_without_the_pin(
    keys: dict[str, Pkcs11Signer], hsm: SoftHsmToken
) -> None:
    signer = keys["ed25519"]
    assert signer.uri == f"pkcs11:token={hsm.label};object=test-ed25519;type=private"
    assert hsm.pin not in repr(signer) and hsm.pin not in repr(Pkcs11Config("m", "t", hsm.pin))


def test_signing_from_many_threads_at_once(keys: dict[str, Pkcs11Signer]) -> None:
    """One session per thread, calls one at a time: nothing gets mixed up."""
    jobs = [(key_type, f"message {i}".encode()) for i in range(40) for key_type in keys]

    async def sign_all() -> list[bytes]:
        def sign(key_type: str, data: bytes) -> bytes:
            algorithm = None if key_type == "ed25519" else hashes.SHA256()
            return keys[key_type].sign(data, algorithm)

        return await asyncio.gather(*(asyncio.to_thread(sign, k, d) for k, d in jobs))

    signatures = asyncio.run(sign_all())
    for (key_type, data), signature in zip(jobs, signatures, strict=True):
        public = keys[key_type].public_key()
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(signature, data)


def test_signing_recovers_after_the_module_is_reinitialised(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer]
) -> None:
    signer = keys["rsa-2048"]
    signer.sign(DATA, hashes.SHA256())
    with module_gate(config.module):
        load_module(config.module).reinitialize()  # every session handle is now invalid
    signature = signer.sign(DATA, hashes.SHA256())
    public = signer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, DATA, PKCS1v15(), hashes.SHA256())


def test_a_closed_signer_refuses_and_others_go_on(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer]
) -> None:
    signer = open_signer(config, "test-ed25519")
    signer.close()
    with pytest.raises(ConfigError, match="closed"):
        signer.sign(DATA, None)
    keys["ed25519"].sign(DATA, None)  # the token stays logged in for the other users


# --- errors a user can meet -----------------------------------------------------------


def test_wrong_pin_is_a_clear_config_error(tokens: tuple[SoftHsmToken, SoftHsmToken]) -> None:
    spare = tokens[1]
    with pytest.raises(ConfigError) as caught:
        open_signer(Pkcs11Config(spare.module, spare.label, spare.pin + "0"), "any")
    assert str(caught.value) == f"cannot log in to PKCS#11 token {spare.label!r}: wrong PIN"
    # The right PIN works afterwards (the failed attempt left nothing behind).
    generate_keypair(Pkcs11Config(spare.module, spare.label, spare.pin), "k", "ec-p256")


def test_another_pin_for_a_token_in_use_is_refused(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer]
) -> None:
    # PKCS#11 would not even check it (the token is logged in already): refuse it.
    with pytest.raises(ConfigError, match="already logged in in this process with a different PIN"):
        open_signer(Pkcs11Config(config.module, config.token_label, "not-the-pin"), "test-ed25519")


def test_missing_token_module_and_key_are_named(
    config: Pkcs11Config, keys: dict[str, Pkcs11Signer], tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError, match=r"no PKCS#11 token labelled 'nope' in module .*tokens there: .*"
    ):
        open_signer(Pkcs11Config(config.module, "nope", config.pin), "k")
    with pytest.raises(ConfigError, match=r"PKCS#11 module /nonexistent/lib\.so does not exist"):
        open_signer(Pkcs11Config("/nonexistent/lib.so", config.token_label, config.pin), "k")
    not_a_library = tmp_path / "lib.so"
    not_a_library.write_text("not a library")
    with pytest.raises(ConfigError, match="cannot load PKCS#11 module"):
        open_signer(Pkcs11Config(str(not_a_library), config.token_label, config.pin), "k")
    with pytest.raises(ConfigError, match=r"no PKCS#11 private key labelled 'absent' on token"):
        open_signer(config, "absent")


def test_lesser_hsm_rsa_fallback_and_clear_ed25519_refusal(tmp_path: Path) -> None:
    """A token without CKM_SHA*_RSA_PKCS signs RSA through CKM_RSA_PKCS + DigestInfo; a token
    without CKM_EDDSA refuses Ed25519 with a message that says to keep it in a file.
    (Another SoftHSM2 configuration needs another process: the module reads it once.)"""
    conf = write_conf(
        tmp_path,
        disabled_mechanisms=(
            "CKM_SHA256_RSA_PKCS",
            "CKM_SHA384_RSA_PKCS",
            "CKM_SHA512_RSA_PKCS",
            "CKM_EDDSA",
            "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        ),
    )
    token = init_token(conf, "lesser-hsm")
    script = textwrap.dedent(
        f"""
        import pkcs11
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from secumail.errors import ConfigError
        from secumail.pki.pkcs11_signer import Pkcs11Config, generate_keypair, open_signer
        config = Pkcs11Config({token.module!r}, {token.label!r}, {token.pin!r})
        generate_keypair(config, "rsa", "rsa-2048")
        with open_signer(config, "rsa") as signer:
            assert pkcs11.Mechanism.SHA256_RSA_PKCS not in signer._tokens.mechanisms
            for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
                signature = signer.sign(b"data", algorithm)
                signer.public_key().verify(signature, b"data", PKCS1v15(), algorithm)
        print("rsa ok")
        try:
            generate_keypair(config, "ed", "ed25519")
        except ConfigError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"SOFTHSM2_CONF": str(conf), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rsa ok"
    assert lines[1] == (
        "PKCS#11 token 'lesser-hsm' cannot make ed25519 keys (lacks CKM_EC_EDWARDS_KEY_PAIR_GEN, "
        "CKM_EDDSA); keep the Ed25519 key (evidence, DKIM) in a file instead"
    )


# --- the CA's issuing key on the token ------------------------------------------------


class HsmCa:
    def __init__(self, directory: Path, ca: CertificateAuthority, signer: Pkcs11Signer) -> None:
        self.dir = directory
        self.ca = ca
        self.signer = signer
        self.issued: IssuedCert = ca.issue_smime("jan@zorg.test")
        (directory / "leaf.pem").write_bytes(self.issued.cert_pem())

    @property
    def root(self) -> Path:
        return self.dir / "root.pem"

    @property
    def issuing(self) -> Path:
        return self.dir / "issuing.pem"

    @property
    def leaf(self) -> Path:
        return self.dir / "leaf.pem"


@pytest.fixture(scope="module", params=["ec-p384", "rsa-2048"])
def hsm_ca(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, config: Pkcs11Config
) -> Iterator[HsmCa]:
    label = f"issuing-ca-{request.param}"
    generate_keypair(config, label, request.param)
    signer = open_signer(config, label)
    directory = tmp_path_factory.mktemp("hsm-ca")
    ca = create_with_hsm_issuing_key(directory, "Zorg Noord", signer)
    yield HsmCa(directory, ca, signer)
    signer.close()


def test_issuing_ca_certifies_the_hsm_key_and_writes_no_key_file(hsm_ca: HsmCa) -> None:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hsm_ca.ca.issuing.public_key().public_bytes(*spki) == (
        hsm_ca.signer.public_key().public_bytes(*spki)
    )
    assert not (hsm_ca.dir / "issuing-key.pem").exists()
    assert (hsm_ca.dir / "root-key.pem").exists()
    result = openssl("verify", "-CAfile", hsm_ca.root, hsm_ca.issuing)
    assert result.returncode == 0, result.stderr
    text = openssl("x509", "-in", hsm_ca.issuing, "-noout", "-text").stdout.decode()
    assert re.search(r"Basic Constraints: critical\n\s*CA:TRUE, pathlen:0", text)


def test_leaf_issued_by_the_hsm_verifies_with_openssl(hsm_ca: HsmCa) -> None:
    result = openssl(
        "verify", "-CAfile", hsm_ca.root, "-untrusted", hsm_ca.issuing,
        "-purpose", "smimesign", hsm_ca.leaf,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(b": OK")
    # The issuing CA is needed: the leaf was signed by the HSM key, not by the root.
    assert openssl("verify", "-CAfile", hsm_ca.root, hsm_ca.leaf).returncode != 0


def test_message_signed_with_a_leaf_of_the_hsm_ca_verifies(hsm_ca: HsmCa, tmp_path: Path) -> None:
    issued = hsm_ca.issued
    key = as_private_key(FileKeySigner(issued.key))  # per-sender leaf keys stay file keys
    signed = sign_message(MESSAGE, issued.cert, key, issued.chain)
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    result = openssl(
        "smime", "-verify", "-in", path, "-CAfile", hsm_ca.root, "-purpose", "smimesign"
    )
    assert result.returncode == 0, result.stderr
    assert b"Verification successful" in result.stderr
    assert result.stdout.endswith(b"Uw uitslag is goed.\r\n")
    path.write_bytes(signed.replace(b"Uw uitslag is goed.", b"Uw uitslag is fout."))
    tampered = openssl("smime", "-verify", "-in", path, "-CAfile", hsm_ca.root)
    assert tampered.returncode != 0


def test_cms_signature_made_on_the_token_verifies(
    hsm_ca: HsmCa, keys: dict[str, Pkcs11Signer], tmp_path: Path
) -> None:
    """The CMS builder signs through `as_private_key` with a key on the token, too."""
    signer = keys["rsa-2048"]
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway@zorg.test")]))
        .issuer_name(hsm_ca.ca.issuing.subject)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("gateway@zorg.test")]), critical=False
        )
        .sign(as_private_key(hsm_ca.signer), hashes.SHA256())
    )
    signed = sign_message(MESSAGE, cert, as_private_key(signer), [hsm_ca.ca.issuing])
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    result = openssl("smime", "-verify", "-in", path, "-CAfile", hsm_ca.root)
    assert result.returncode == 0, result.stderr


def test_ca_directory_loads_with_the_hsm_signer_only(hsm_ca: HsmCa, config: Pkcs11Config) -> None:
    loaded = CertificateAuthority.load(hsm_ca.dir, issuing_signer=hsm_ca.signer)
    assert loaded.issue_smime("piet@zorg.test").cert.issuer == hsm_ca.ca.issuing.subject
    with pytest.raises(ConfigError, match=r"issuing-key\.pem"):
        CertificateAuthority.load(hsm_ca.dir)
    # Idempotent for the same key, refused for another one.
    again = create_with_hsm_issuing_key(hsm_ca.dir, "Zorg Noord", hsm_ca.signer)
    assert again.issuing == hsm_ca.ca.issuing
    with pytest.raises(ConflictError, match="another key"):
        create_with_hsm_issuing_key(
            hsm_ca.dir, "Zorg Noord", FileKeySigner(ec.generate_private_key(ec.SECP384R1()))
        )


# --- evidence signed on the token -----------------------------------------------------


def doc_block(name: str) -> str:
    """The shell block after `<!-- doc-test: name -->` in docs/evidence.md."""
    text = (ROOT / "docs" / "evidence.md").read_text()
    match = re.search(rf"<!-- doc-test: {re.escape(name)} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert match, f"docs/evidence.md has no block {name!r}"
    return match.group(1)


def test_evidence_signed_on_the_token_verifies(
    keys: dict[str, Pkcs11Signer], tmp_path: Path
) -> None:
    key = EvidenceKey(keys["ed25519"])
    token = sign_evidence(RECORD, key)
    assert verify_evidence(token, key.public_jwk()) == RECORD
    # As a third party checks it, with the openssl commands of docs/evidence.md.
    (tmp_path / "evidence.jws").write_text(token + "\n")
    (tmp_path / "evidence-key.jwk").write_text(json.dumps(key.public_jwk()) + "\n")
    result = subprocess.run(
        ["sh", "-c", doc_block("openssl")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == key.public_jwk()["kid"]
    assert "Signature Verified Successfully" in result.stdout
    assert json.loads((tmp_path / "record.json").read_text()) == RECORD


def test_evidence_key_on_the_token_cannot_be_saved(
    keys: dict[str, Pkcs11Signer], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="HSM"):
        EvidenceKey(keys["ed25519"]).save(tmp_path / "evidence.key")
    with pytest.raises(ConfigError, match="Ed25519"):
        EvidenceKey(keys["ec-p384"])
