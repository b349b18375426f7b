"""Signed delivery evidence: JWS compact (RFC 7515) with EdDSA/Ed25519 (RFC 8037).

Also runs the verification commands of docs/evidence.md, as written, against real
tokens: the documentation is what a third party relies on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from secumail.errors import ConfigError, ConflictError
from secumail.pki.ca import FileKeySigner
from secumail.pki.evidence import (
    EvidenceError,
    EvidenceKey,
    canonical_json,
    jwk_thumbprint,
    message_sha256,
    sign_evidence,
    verify_entry,
    verify_evidence,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "evidence.md"

MESSAGE = b"From: jan@zorg.test\r\nTo: p@example.test\r\nSubject: Uitslag\r\n\r\nGoed.\r\n"

RECORD: dict[str, Any] = {
    "message_id": "<uitslag-1@zorg.test>",
    "message_sha256": message_sha256(MESSAGE),
    "envelope_from": "jan@zorg.test",
    "recipient": "p@example.test",
    "mx_host": "mx1.example.test",
    "mx_ip": "192.0.2.25",
    "route": "dane",
    "tls_version": "TLSv1.3",
    "tls_cipher": "TLS_AES_256_GCM_SHA384",
    "peer_cert_sha256": "ab" * 32,
    "remote_reply": "250 2.0.0 Ok: queued as 4XyZ",
    "timestamp": "2025-01-06T09:00:01Z",
    "gateway": "gw1.zorg.test",
}

# RFC 8037 Appendix A.1: the example Ed25519 key.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def key() -> EvidenceKey:
    return EvidenceKey.generate()


@pytest.fixture(scope="module")
def token(key: EvidenceKey) -> str:
    return sign_evidence(RECORD, key)


def forge(header: dict[str, Any], payload: bytes, signature: bytes = b"") -> str:
    h = b64url(json.dumps(header).encode())
    return f"{h}.{b64url(payload)}.{b64url(signature)}"


# --- keys -----------------------------------------------------------------------------


def rfc8037_key() -> EvidenceKey:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    return EvidenceKey(FileKeySigner(private))


def test_public_jwk_and_thumbprint_match_rfc8037_examples() -> None:
    # RFC 8037 A.2 (public key) and A.3 (RFC 7638 thumbprint).
    jwk = rfc8037_key().public_jwk()
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert jwk["alg"] == "EdDSA"
    assert "d" not in jwk
    assert jwk_thumbprint(jwk) == jwk["kid"]


def test_signature_matches_rfc8037_example() -> None:
    # RFC 8037 A.4: Ed25519 is deterministic, so the example signature is reproducible.
    signing_input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    assert b64url(rfc8037_key().sign(signing_input)) == (
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )


def test_save_and_load(tmp_path: Path, key: EvidenceKey, token: str) -> None:
    path = tmp_path / "evidence-key.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = EvidenceKey.load(path)
    assert loaded.public_jwk() == key.public_jwk()
    assert verify_evidence(sign_evidence(RECORD, loaded), key.public_jwk()) == RECORD


def test_save_never_overwrites_a_key(tmp_path: Path, key: EvidenceKey) -> None:
    path = tmp_path / "evidence-key.pem"
    path.write_bytes(b"the old key")
    with pytest.raises(ConflictError):
        key.save(path)
    assert path.read_bytes() == b"the old key"


def test_load_refuses_a_key_that_is_not_ed25519(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        EvidenceKey.load(path)


def test_message_sha256_is_hex_of_the_exact_bytes() -> None:
    # FIPS 180-2 test vector "abc".
    assert message_sha256(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert message_sha256(MESSAGE) != message_sha256(MESSAGE.replace(b"\r\n", b"\n"))


# --- signing and verifying ------------------------------------------------------------


def test_round_trip(key: EvidenceKey, token: str) -> None:
    assert verify_evidence(token, key.public_jwk()) == RECORD


def test_token_layout(key: EvidenceKey, token: str) -> None:
    h, p, s = token.split(".")
    assert json.loads(b64url_decode(h)) == {
        "alg": "EdDSA",
        "kid": key.public_jwk()["kid"],
        "typ": "secumail-evidence+json",
    }
    # Canonical JSON: sorted keys, no white space, UTF-8.
    assert b64url_decode(p) == json.dumps(RECORD, sort_keys=True, separators=(",", ":")).encode()
    assert len(b64url_decode(s)) == 64
    assert "=" not in token


def test_payload_is_utf8_not_escaped(key: EvidenceKey) -> None:
    record = {"remote_reply": "250 Ok, bedankt Zoë", "b": 1, "a": [True, None]}
    assert (
        canonical_json(record)
        == '{"a":[true,null],"b":1,"remote_reply":"250 Ok, bedankt Zoë"}'.encode()
    )
    assert verify_evidence(sign_evidence(record, key), key.public_jwk()) == record


def test_record_must_be_plain_json(key: EvidenceKey) -> None:
    with pytest.raises(TypeError):
        sign_evidence({"x": float("nan")}, key)
    with pytest.raises(TypeError):
        sign_evidence({"x": b"bytes"}, key)


def test_a_changed_payload_byte_is_rejected(key: EvidenceKey, token: str) -> None:
    h, p, s = token.split(".")
    payload = b64url_decode(p).replace(b"192.0.2.25", b"192.0.2.26")
    with pytest.raises(EvidenceError, match="signature"):
        verify_evidence(f"{h}.{b64url(payload)}.{s}", key.public_jwk())


def test_a_changed_signature_byte_is_rejected(key: EvidenceKey, token: str) -> None:
    h, p, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    sig[10] ^= 1
    with pytest.raises(EvidenceError, match="signature"):
        verify_evidence(f"{h}.{p}.{b64url(bytes(sig))}", key.public_jwk())


def test_another_key_is_rejected(token: str) -> None:
    other = EvidenceKey.generate().public_jwk()
    with pytest.raises(EvidenceError, match="another key"):
        verify_evidence(token, other)
    # Even when an attacker copies the kid: the signature decides.
    with pytest.raises(EvidenceError, match="signature"):
        verify_evidence(
            token, {**other, "kid": json.loads(b64url_decode(token.split(".")[0]))["kid"]}
        )


def test_alg_none_is_rejected(key: EvidenceKey, token: str) -> None:
    # RFC 7518 §3.6 / RFC 8725 §2.1: an unsecured JWS must never be accepted.
    h = json.loads(b64url_decode(token.split(".")[0]))
    payload = b64url_decode(token.split(".")[1])
    with pytest.raises(EvidenceError, match="EdDSA"):
        verify_evidence(forge({**h, "alg": "none"}, payload), key.public_jwk())


def test_hs256_with_the_public_key_as_secret_is_rejected(key: EvidenceKey, token: str) -> None:
    # RFC 8725 §2.1: the algorithm-confusion attack; the public key is public.
    h = {**json.loads(b64url_decode(token.split(".")[0])), "alg": "HS256"}
    payload = json.dumps({**RECORD, "recipient": "someone@else.test"}).encode()
    signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(payload)}".encode()
    mac = hmac.new(b64url_decode(key.public_jwk()["x"]), signing_input, hashlib.sha256).digest()
    with pytest.raises(EvidenceError, match="EdDSA"):
        verify_evidence(signing_input.decode() + "." + b64url(mac), key.public_jwk())


@pytest.mark.parametrize(
    "change",
    [
        {"typ": "JWT"},
        {"crit": ["b64"], "b64": False},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}},
    ],
)
def test_other_header_parameters_are_rejected(
    key: EvidenceKey, token: str, change: dict[str, Any]
) -> None:
    h = {**json.loads(b64url_decode(token.split(".")[0])), **change}
    hb = b64url(json.dumps(h).encode())
    signing_input = f"{hb}.{token.split('.')[1]}".encode()
    forged = signing_input.decode() + "." + b64url(key.sign(signing_input))  # even if signed
    with pytest.raises(EvidenceError):
        verify_evidence(forged, key.public_jwk())


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.AA",
        "e30=.e30.AA",
        "bm90IGpzb24.e30.AA",  # header is not JSON
        "WzFd.e30.AA",  # header is a JSON array
        "x" * 70000,
    ],
)
def test_malformed_tokens_are_rejected(key: EvidenceKey, bad: str) -> None:
    with pytest.raises(EvidenceError):
        verify_evidence(bad, key.public_jwk())


def test_duplicate_member_names_are_rejected(key: EvidenceKey) -> None:
    header = {"alg": "EdDSA", "kid": key.public_jwk()["kid"], "typ": "secumail-evidence+json"}
    hb = b64url(json.dumps(header, separators=(",", ":")).encode())
    pb = b64url(b'{"recipient":"a@x.test","recipient":"b@x.test"}')
    token = f"{hb}.{pb}.{b64url(key.sign(f'{hb}.{pb}'.encode()))}"
    with pytest.raises(EvidenceError, match="repeats"):
        verify_evidence(token, key.public_jwk())


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d": RFC8037_D,
        },
    ],
)
def test_unusable_verification_keys_are_rejected(token: str, jwk: dict[str, str]) -> None:
    with pytest.raises(EvidenceError):
        verify_evidence(token, jwk)


def test_jwk_without_kid_is_matched_by_thumbprint(key: EvidenceKey, token: str) -> None:
    jwk = {k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x")}
    assert verify_evidence(token, jwk) == RECORD


# --- the documented third-party checks (docs/evidence.md) -----------------------------


def doc_block(name: str) -> str:
    """The code block after `<!-- doc-test: name -->` in docs/evidence.md."""
    match = re.search(
        rf"<!-- doc-test: {re.escape(name)} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S
    )
    assert match, f"docs/evidence.md has no block {name!r}"
    return match.group(1)


def run_doc(name: str, where: Path, *, shell: str = "sh") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shell, "-c", doc_block(name)],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def evidence_files(tmp_path: Path, key: EvidenceKey, token: str) -> Path:
    (tmp_path / "evidence.jws").write_text(token + "\n")
    (tmp_path / "evidence-key.jwk").write_text(json.dumps(key.public_jwk(), indent=2) + "\n")
    (tmp_path / "message.eml").write_bytes(MESSAGE)
    return tmp_path


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_documented_openssl_commands_verify(
    evidence_files: Path, key: EvidenceKey, shell: str
) -> None:
    result = run_doc("openssl", evidence_files, shell=shell)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == key.public_jwk()["kid"]  # the thumbprint computed with openssl
    assert json.loads(lines[1])["alg"] == "EdDSA"
    assert "Signature Verified Successfully" in result.stdout
    assert json.loads((evidence_files / "record.json").read_text()) == RECORD
    hashed = run_doc("sha256", evidence_files)
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() == "message.eml: OK"


def test_documented_openssl_commands_reject_a_changed_record(
    evidence_files: Path, token: str
) -> None:
    h, p, s = token.split(".")
    payload = b64url_decode(p).replace(b"p@example.test", b"q@example.test")
    (evidence_files / "evidence.jws").write_text(f"{h}.{b64url(payload)}.{s}\n")
    result = run_doc("openssl", evidence_files)
    assert result.returncode != 0
    assert "Signature Verified Successfully" not in result.stdout
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_documented_hash_check_rejects_another_message(evidence_files: Path) -> None:
    assert run_doc("openssl", evidence_files).returncode == 0
    (evidence_files / "message.eml").write_bytes(MESSAGE.replace(b"Goed.", b"Slecht."))
    result = run_doc("sha256", evidence_files)
    assert result.returncode != 0
    assert "FAILED" in result.stdout


def test_documented_python_check(evidence_files: Path, token: str) -> None:
    script = doc_block("python").replace("python3", shlex.quote(sys.executable), 1)
    result = subprocess.run(
        ["sh", "-c", script], cwd=evidence_files, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == RECORD
    h, p, s = token.split(".")
    (evidence_files / "evidence.jws").write_text(f"{h}.{p[:-2]}AA.{s}\n")
    result = subprocess.run(
        ["sh", "-c", script], cwd=evidence_files, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "InvalidSignature" in result.stderr


def test_joserfc_verifies_as_documented(evidence_files: Path, key: EvidenceKey) -> None:
    """An independent JOSE implementation (joserfc, a test dependency) accepts the token."""
    python = sys.executable
    snippet = re.search(r"```python\n(.*?)\n```", DOC.read_text(), re.S)
    assert snippet
    code = snippet.group(1) + "\nprint(json.dumps(record))\n"
    result = subprocess.run(
        [python, "-c", code], cwd=evidence_files, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == RECORD


# --- exported entries: readable copies must say what the token says (issue 11) ----------


def test_an_exported_entry_verifies_only_when_its_copies_agree(key: EvidenceKey, token: str) -> None:
    jwk = key.public_jwk()
    assert verify_entry({"recipient": RECORD["recipient"], "token": token, "record": RECORD}, jwk) == RECORD
    assert verify_entry({"token": token}, jwk) == RECORD
    with pytest.raises(EvidenceError, match="readable recipient"):
        verify_entry({"recipient": "mallory@example.test", "token": token}, jwk)
    with pytest.raises(EvidenceError, match="differs from the signed one in: mx_host"):
        verify_entry({"token": token, "record": {**RECORD, "mx_host": "mx.evil.test"}}, jwk)
    with pytest.raises(EvidenceError, match="differs from the signed one in: extra"):
        verify_entry({"token": token, "record": {**RECORD, "extra": 1}}, jwk)
    with pytest.raises(EvidenceError, match="unsigned members in the entry: note"):
        verify_entry({"token": token, "note": "also delivered to mallory"}, jwk)
    with pytest.raises(EvidenceError, match="no token"):
        verify_entry({"recipient": RECORD["recipient"]}, jwk)
    with pytest.raises(EvidenceError):
        verify_entry(["not", "an", "object"], jwk)
