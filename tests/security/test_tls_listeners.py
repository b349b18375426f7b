"""TLS of every listener of a running gateway: submission STARTTLS (587), implicit TLS
(465, RFC 8314) and the HTTPS API, scanned from outside with nassl (tests/security/
tls_probe.py), which offers what a modern client never would (SSLv2/3, TLS 1.0/1.1,
RC4, 3DES, EXPORT, NULL, anonymous suites, compression, client renegotiation).

The yardstick is NCSC-NL, "ICT-beveiligingsrichtlijnen voor Transport Layer Security
(TLS)" / "IT Security Guidelines for TLS", v2.1 (2021): its tables of versions, cipher
suites, key exchange groups and certificate keys rated Good / Sufficient / Phase out /
Insufficient, encoded below (the "sufficient" rows as we read them; check them against
the newest revision when they change). A listener may offer only Good or Sufficient, and
— stricter than v2.1, which still rates ECDHE with CBC-SHA1 "sufficient" — the project
allows no CBC with SHA-1 and asks forward secrecy of every suite (issue 11).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nassl.ssl_client import OpenSslVersionEnum

from tests.e2e.world import GATEWAY_HOST, GatewayProcess
from tests.harness.pki import TestCA
from tests.security import tls_probe
from tests.security.tls_probe import Listener

pytestmark = pytest.mark.e2e

# NCSC-NL TLS guidelines v2.1 (2021), cipher suites (OpenSSL names), TLS 1.2.
NCSC_GOOD_TLS12 = {
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
}
NCSC_SUFFICIENT_TLS12 = {
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-SHA256",
    "DHE-RSA-AES256-SHA",
    "DHE-RSA-AES128-SHA256",
    "DHE-RSA-AES128-SHA",
}
# TLS 1.3: every suite with AES-GCM or ChaCha20-Poly1305 is Good; AES-CCM is Sufficient
# (v2.1 rates TLS_AES_128_CCM_SHA256 sufficient, CCM_8 phase out).
NCSC_GOOD_TLS13 = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}
NCSC_SUFFICIENT_TLS13 = {"TLS_AES_128_CCM_SHA256"}
# Key exchange groups: ECDHE over secp384r1, secp256r1, x25519, x448 Good; finite-field
# DHE with ffdhe4096/ffdhe3072 (>= 3072 bits) Sufficient; 2048-bit DH Phase out.
NCSC_GOOD_CURVE_BITS = {256, 384, 448, 253}  # sizes nassl reports (x25519 → 253)
NCSC_MIN_DH_BITS = 3072
# Certificates: RSA >= 2048 (3072 from the 2025 revision "good"), ECDSA P-256/P-384.
MIN_RSA_BITS = 2048
SSL_OP_ALLOW_CLIENT_RENEGOTIATION = 1 << 8  # OpenSSL 3 ssl.h; not exported by Python's ssl


def _no_sha1_cbc(cipher: str) -> bool:
    """The project's extra rule: no CBC suite with a SHA-1 MAC (names end in -SHA)."""
    return not cipher.endswith("-SHA")


def _forward_secret(cipher: str) -> bool:
    return cipher.startswith(("ECDHE-", "DHE-", "TLS_"))


@pytest.fixture(params=["ec-self-signed", "rsa-2048"])
def listeners(
    request: pytest.FixtureRequest, make_gateway: Callable[..., GatewayProcess], test_ca: TestCA
) -> dict[str, Listener]:
    """The gateway with its own self-signed P-256 certificate (the default), and with an
    operator's RSA-2048 certificate (`tls.cert_file`): RSA certificates make a server
    offer RSA suites, and those are where weak choices hide (RSA key exchange)."""
    if request.param == "rsa-2048":
        cert = test_ca.issue(GATEWAY_HOST)
        gateway = make_gateway(tls__cert_file=str(cert.cert_file), tls__key_file=str(cert.key_file))
    else:
        gateway = make_gateway()
    gateway.start()
    gateway._wait_listening(gateway.api_port)
    return {
        "submission-starttls": Listener("submission STARTTLS", gateway.submission_port, starttls=True),
        "submission-implicit": Listener("submission implicit TLS", gateway.tls_port),
        "api-https": Listener("HTTPS API", gateway.api_port),
    }


LISTENERS = ["submission-starttls", "submission-implicit", "api-https"]


def _check_listener(listener: Listener, note: Callable[[str], None]) -> dict[str, object]:
    """Every check against one listener; problems go to `note`, facts are returned."""
    facts: dict[str, object] = {}
    # 1. Versions: nothing below TLS 1.2 (NCSC v2.1: TLS 1.3 good, 1.2 sufficient, 1.1 and
    #    1.0 phase out, SSL 3.0 and older insufficient; the project allows no phase-out).
    for name, version in tls_probe.LEGACY_VERSIONS.items():
        # the legacy build offers SSLv2/3 and TLS 1.0/1.1 with every suite it has
        got = tls_probe.accepts(listener, version, legacy=True, ciphers=tls_probe.ALL_CIPHERS)
        if got is not None:
            note(f"{name} accepted ({got})")
    facts["tls1.2"] = tls_probe.accepts(listener, OpenSslVersionEnum.TLSV1_2)
    facts["tls1.3"] = tls_probe.accepts(listener, OpenSslVersionEnum.TLSV1_3)
    if facts["tls1.2"] is None and facts["tls1.3"] is None:
        note("neither TLS 1.2 nor TLS 1.3 completes a handshake")

    # 2. Suites, each offered alone, by both OpenSSL builds (RC4/EXPORT only in legacy).
    tls12 = tls_probe.accepted_tls12_ciphers(listener)
    tls13 = tls_probe.accepted_tls13_suites(listener)
    facts["tls12_suites"], facts["tls13_suites"] = sorted(tls12), sorted(tls13)
    for c in sorted(tls12):
        if c not in NCSC_GOOD_TLS12 | NCSC_SUFFICIENT_TLS12:
            note(f"TLS 1.2 suite {c} is not NCSC good/sufficient")
        if not _forward_secret(c):
            note(f"TLS 1.2 suite {c} has no forward secrecy")
        if not _no_sha1_cbc(c):
            note(f"TLS 1.2 suite {c} is CBC with SHA-1")
    for c in sorted(tls13):
        if c not in NCSC_GOOD_TLS13 | NCSC_SUFFICIENT_TLS13:
            note(f"TLS 1.3 suite {c} is not NCSC good/sufficient")

    # 3. Key exchange: ECDHE groups good; DHE at least 3072 bits.
    for c in sorted(tls12):
        kind, size = tls_probe.ephemeral_key(listener, c)
        if kind == "ECDH" and size not in NCSC_GOOD_CURVE_BITS:
            note(f"{c}: ECDHE over a {size}-bit curve")
        elif kind == "DH" and size < NCSC_MIN_DH_BITS:
            note(f"{c}: DHE group of {size} bits (< {NCSC_MIN_DH_BITS}: phase out)")
        elif kind not in ("ECDH", "DH"):
            note(f"{c}: ephemeral key {kind}")

    for curve in tls_probe.accepted_weak_curves(listener):
        note(f"ECDHE over the weak curve {curve} accepted")
    # (TLS 1.3 finite-field groups: test_listener_refuses_ffdhe2048_key_exchange)

    # 4. No compression (CRIME), secure renegotiation, no client renegotiation.
    if facts["tls1.2"] is not None:
        method = tls_probe.compression(listener)
        facts["compression"] = method
        if method:
            note(f"TLS compression {method} agreed")
        if not tls_probe.secure_renegotiation(listener):
            note("no secure renegotiation (RFC 5746)")
        if tls_probe.client_renegotiation_accepted(listener):
            note("client-initiated renegotiation accepted")

    # 5. Certificate key.
    kind, bits = tls_probe.key_strength(tls_probe.leaf_certificate(listener))
    facts["certificate"] = f"{kind} {bits}"
    if kind == "RSA" and bits < MIN_RSA_BITS:
        note(f"certificate RSA key of {bits} bits")
    elif kind.startswith("EC ") and bits < 256:
        note(f"certificate EC key of {bits} bits")
    elif kind not in ("RSA", "Ed25519", "Ed448") and not kind.startswith("EC "):
        note(f"certificate key {kind}")
    return facts


@pytest.mark.parametrize("which", LISTENERS)
def test_listener_offers_only_ncsc_good_or_sufficient_tls(
    listeners: dict[str, Listener], which: str
) -> None:
    listener = listeners[which]
    problems: list[str] = []
    facts = _check_listener(listener, problems.append)
    print(f"{listener.name}: {facts}")
    assert facts["tls12_suites"] or facts["tls13_suites"], "no suite accepted at all: probe broken?"
    assert not problems, f"{listener.name} (port {listener.port}): " + "; ".join(problems)


def test_listeners_refuse_ffdhe2048_key_exchange(listeners: dict[str, Listener]) -> None:
    accepting = []
    for listener in listeners.values():
        assert tls_probe.openssl_accepts_group(listener, "X25519"), f"probe broken: {listener.name}"
        if tls_probe.openssl_accepts_group(listener, "ffdhe2048"):
            accepting.append(listener.name)
    assert accepting == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_the_probe_sees_a_weak_server(tmp_path, test_ca) -> None:
    """The scanner is not blind: a server that allows TLS 1.0 and CBC-SHA1 is caught."""
    import ssl
    import threading

    from tests.harness import free_port

    cert = test_ca.issue("weak.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0")
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    ctx.options |= SSL_OP_ALLOW_CLIENT_RENEGOTIATION  # OpenSSL 3 refuses it by default
    port = free_port()
    server = __import__("socket").create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            try:
                conn.settimeout(5)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        problems: list[str] = []
        _check_listener(Listener("weak", port), problems.append)
    finally:
        stop.set()
        thread.join()
        server.close()
    text = "; ".join(problems)
    assert "TLSv1.0 accepted" in text
    assert "AES128-SHA has no forward secrecy" in text
    assert "ECDHE-RSA-AES128-SHA is CBC with SHA-1" in text
    assert "client-initiated renegotiation accepted" in text
