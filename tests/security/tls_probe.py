"""A small TLS scanner for the gateway's listeners, on nassl (the OpenSSL wrapper sslyze
is built on; sslyze itself pins an older `cryptography` than Secumail's).

nassl carries two OpenSSL builds of its own: a modern one (TLS 1.2/1.3, every cipher
suite OpenSSL still has) and a legacy 1.0.2 (SSLv2, SSLv3, RC4, EXPORT, compression,
client-initiated renegotiation). So the probe can offer what a modern client never would,
and the system OpenSSL the gateway runs on is not the judge of itself.

Each probe is one fresh TCP connection to 127.0.0.1; for the STARTTLS listener the probe
says EHLO and STARTTLS first (RFC 3207 §4).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from nassl import _nassl
from nassl.ephemeral_key_info import DhEphemeralKeyInfo, EcDhEphemeralKeyInfo, OpenSslEcNidEnum
from nassl.legacy_ssl_client import LegacySslClient
from nassl.ssl_client import OpenSslVerifyEnum, OpenSslVersionEnum, SslClient

# Every suite each OpenSSL build knows, the "all" of `openssl ciphers -v`.
ALL_CIPHERS = "ALL:COMPLEMENTOFALL"
TLS13_SUITES = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
LEGACY_VERSIONS = {
    "SSLv2": OpenSslVersionEnum.SSLV2,
    "SSLv3": OpenSslVersionEnum.SSLV3,
    "TLSv1.0": OpenSslVersionEnum.TLSV1,
    "TLSv1.1": OpenSslVersionEnum.TLSV1_1,
}


OPENSSL_ERRORS = (_nassl.OpenSSLError,)  # both builds raise this type


class HandshakeRefused(Exception):
    """The server did not complete the handshake with what the probe offered."""


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    starttls: bool = False
    host: str = "127.0.0.1"


def _connect(listener: Listener) -> socket.socket:
    sock = socket.create_connection((listener.host, listener.port), timeout=10)
    if listener.starttls:
        f = sock.makefile("rb")
        try:

            def reply() -> bytes:
                line = f.readline()
                while line[3:4] == b"-":
                    line = f.readline()
                return line

            assert reply().startswith(b"220"), "no SMTP greeting"
            sock.sendall(b"EHLO probe.test\r\n")
            assert reply().startswith(b"250"), "EHLO refused"
            sock.sendall(b"STARTTLS\r\n")
            assert reply().startswith(b"220"), "STARTTLS refused"
        finally:
            f.detach()
    return sock


@contextlib.contextmanager
def handshake(
    listener: Listener,
    version: OpenSslVersionEnum,
    *,
    ciphers: str | None = None,
    tls13_suites: str | None = None,
    legacy: bool = False,
) -> Iterator[SslClient | LegacySslClient]:
    """A completed handshake offering only `version` and the given suites, or
    HandshakeRefused."""
    sock = _connect(listener)
    try:
        kind = LegacySslClient if legacy else SslClient
        client = kind(underlying_socket=sock, ssl_version=version, ssl_verify=OpenSslVerifyEnum.NONE)
        if ciphers is not None:
            client.set_cipher_list(ciphers)
        if tls13_suites is not None:
            assert isinstance(client, SslClient)
            client.set_ciphersuites(tls13_suites)
        try:
            client.do_handshake()
        except (OSError, *OPENSSL_ERRORS) as exc:
            raise HandshakeRefused(str(exc)) from exc
        yield client
    finally:
        sock.close()


def accepts(listener: Listener, version: OpenSslVersionEnum, **kw: object) -> str | None:
    """The negotiated cipher name, or None when the server refused."""
    try:
        with handshake(listener, version, **kw) as client:  # type: ignore[arg-type]
            return client.get_current_cipher_name()
    except HandshakeRefused:
        return None


def cipher_names(version: OpenSslVersionEnum, *, legacy: bool = False) -> list[str]:
    """Every suite the chosen OpenSSL build can offer for `version` (TLS 1.2 and older)."""
    kind = LegacySslClient if legacy else SslClient
    client = kind(ssl_version=version, ssl_verify=OpenSslVerifyEnum.NONE)
    client.set_cipher_list(ALL_CIPHERS)
    return [c for c in client.get_cipher_list() if not c.startswith("TLS_")]  # 1.3 suites apart


def accepted_tls12_ciphers(listener: Listener) -> set[str]:
    """Each suite of both OpenSSL builds offered alone over TLS 1.2; the ones accepted."""
    accepted = set()
    for legacy in (False, True):
        for name in cipher_names(OpenSslVersionEnum.TLSV1_2, legacy=legacy):
            if name in accepted:
                continue
            got = accepts(listener, OpenSslVersionEnum.TLSV1_2, ciphers=name, legacy=legacy)
            if got is not None:
                accepted.add(got)
    return accepted


def accepted_tls13_suites(listener: Listener) -> set[str]:
    accepted = set()
    for suite in TLS13_SUITES:
        got = accepts(listener, OpenSslVersionEnum.TLSV1_3, tls13_suites=suite)
        if got is not None:
            accepted.add(got)
    return accepted


def ephemeral_key(listener: Listener, cipher: str) -> tuple[str, int]:
    """("ECDH", curve NID name) or ("DH", bits) of a TLS 1.2 handshake with `cipher`."""
    with handshake(listener, OpenSslVersionEnum.TLSV1_2, ciphers=cipher) as client:
        key = client.get_ephemeral_key()  # type: ignore[union-attr]
    if isinstance(key, EcDhEphemeralKeyInfo):
        return "ECDH", key.size
    if isinstance(key, DhEphemeralKeyInfo):
        return "DH", key.size
    return type(key).__name__, getattr(key, "size", 0)


def leaf_certificate(listener: Listener) -> x509.Certificate:
    with handshake(listener, OpenSslVersionEnum.TLSV1_2) as client:
        pem = client.get_received_chain()[0]
    return x509.load_pem_x509_certificate(pem.encode())


def key_strength(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 448
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


def compression(listener: Listener) -> str | None:
    """The compression method the server agreed to when the (legacy) probe offers zlib."""
    with handshake(
        listener, OpenSslVersionEnum.TLSV1_2, legacy=True, ciphers="ECDHE:DHE:!aNULL"
    ) as client:
        assert isinstance(client, LegacySslClient)
        return client.get_current_compression_method()


def secure_renegotiation(listener: Listener) -> bool:
    """RFC 5746: the server signals secure renegotiation (renegotiation_info)."""
    with handshake(
        listener, OpenSslVersionEnum.TLSV1_2, legacy=True, ciphers="ECDHE:DHE:!aNULL"
    ) as client:
        assert isinstance(client, LegacySslClient)
        return client.get_secure_renegotiation_support()


def client_renegotiation_accepted(listener: Listener, rounds: int = 3) -> bool:
    """Whether the server goes along with renegotiations the client starts (TLS 1.2)."""
    try:
        with handshake(
            listener, OpenSslVersionEnum.TLSV1_2, legacy=True, ciphers="ECDHE:DHE:!aNULL"
        ) as client:
            assert isinstance(client, LegacySslClient)
            for _ in range(rounds):
                client.do_renegotiate()
            return True
    except (HandshakeRefused, OSError, *OPENSSL_ERRORS):
        return False


# Curves below 256 bits, or outside the NIST/Bernstein set, a TLS 1.2 client may offer.
WEAK_CURVES = (
    OpenSslEcNidEnum.SECP192R1,
    OpenSslEcNidEnum.SECP224R1,
    OpenSslEcNidEnum.SECP256K1,
    OpenSslEcNidEnum.SECP160R1,
    OpenSslEcNidEnum.SECT163K1,
    OpenSslEcNidEnum.SECT233R1,
    OpenSslEcNidEnum.SECT283K1,
    OpenSslEcNidEnum.SECT571R1,
)


def accepted_weak_curves(listener: Listener) -> list[str]:
    """TLS 1.2 ECDHE with only one weak curve offered: the curves the server agreed to."""
    accepted = []
    for nid in WEAK_CURVES:
        sock = _connect(listener)
        try:
            client = SslClient(
                underlying_socket=sock,
                ssl_version=OpenSslVersionEnum.TLSV1_2,
                ssl_verify=OpenSslVerifyEnum.NONE,
            )
            client.set_cipher_list("ECDHE")
            client.set_groups([nid])
            try:
                client.do_handshake()
            except (OSError, *OPENSSL_ERRORS):
                continue
            accepted.append(nid.name)
        finally:
            sock.close()
    return accepted


def openssl_accepts_group(listener: Listener, group: str, version: str = "-tls1_3") -> bool:
    """`openssl s_client` (the system's OpenSSL 3, which has the RFC 7919 ffdhe groups in
    TLS 1.3, unlike nassl's 1.1.1) offering only `group`: did the handshake complete?"""
    args = ["openssl", "s_client", "-connect", f"{listener.host}:{listener.port}", version,
            "-groups", group, "-brief"]
    if listener.starttls:
        args += ["-starttls", "smtp"]
    done = subprocess.run(args, input=b"", capture_output=True, timeout=30)
    return done.returncode == 0 and b"CONNECTION ESTABLISHED" in done.stderr
