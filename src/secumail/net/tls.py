"""TLS contexts for both directions, and the gateway's own certificate.

Inbound: TLS 1.2+ with forward-secret AEAD ciphers only (NCSC-NL TLS guidelines 2021,
"good": ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites are all "good"), key
exchange over X25519, P-256 or P-384 only (finite-field ffdhe2048, in OpenSSL 3.0's
default list, is "phase out"), no compression, no renegotiation.

Outbound: the baseline secure route (RFC 8461-style PKIX): TLS 1.2+, a chain to a
trusted root (the system store plus `tls.trust_file`), the certificate naming the MX.
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import datetime as dt
import ipaddress
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secumail.errors import ConfigError
from secumail.keyfiles import pem, write_file

SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# NCSC-NL TLS guidelines (v2.1, table 7): these elliptic curves are "good".
SERVER_GROUPS = b"X25519:P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL ssl.h: SSL_CTX_set1_groups_list


def server_context(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """The listeners' context; with `client_ca_file`, a client certificate is asked for
    (RFC 8446 §4.3.2 CertificateRequest) and, when sent, must chain to those CAs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    restrict_groups(ctx, SERVER_GROUPS)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load gateway certificate {cert_file}: {exc}") from exc
    if client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"submission.client_ca_file: cannot load {client_ca_file}: {exc}"
            ) from exc
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The (verified) certificate a client presented: when it expires and its SHA-256."""

    not_after: float
    sha256: str


def client_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> ClientCertificate | None:
    """The peer's certificate, if it sent one (on a context that asked and verified it)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return ClientCertificate(
        cert.not_valid_after_utc.timestamp(), cert.fingerprint(hashes.SHA256()).hex()
    )


def restrict_groups(ctx: ssl.SSLContext, groups: bytes) -> None:
    """Limit the key-exchange groups of `ctx` (SSL_CTX_set1_groups_list).

    Python's `ssl` (3.11–3.14) can set one curve only (`set_ecdh_curve`), which would drop
    X25519. CPython's SSLContext object holds its `SSL_CTX *` right after the object
    header; the pointer is checked against the context's own options before anything is
    set through it, and anything unexpected is an error at start, never a silent skip.
    """
    if sys.implementation.name != "cpython":
        raise ConfigError("restricting TLS key-exchange groups needs CPython")
    lib = ctypes.CDLL(_ssl.__file__)
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or lib.SSL_CTX_get_options(pointer) != int(ctx.options):
        raise ConfigError("cannot reach this Python's TLS context to restrict its groups")
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups) != 1:
        raise ConfigError(f"OpenSSL refused the key-exchange groups {groups.decode()}")


TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def verifying_client_context(trust_file: Path | None, min_tls: str = "TLSv1.2") -> ssl.SSLContext:
    """PKIX-verifying client context: system roots plus the operator's extra bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = TLS_VERSIONS[min_tls]
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if trust_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(trust_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load tls.trust_file {trust_file}: {exc}") from exc
    return ctx


def ensure_gateway_certificate(cert_file: Path, key_file: Path, hostname: str) -> bool:
    """Make a self-signed certificate for `hostname` when none exists; True if made."""
    if cert_file.exists() and key_file.exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname)]
    with contextlib.suppress(ValueError):
        sans = [x509.IPAddress(ipaddress.ip_address(hostname))]
    # The self-signed default also names this machine's loopback, so the quick start
    # (`curl --cacert var/tls/gateway.crt https://localhost:8443/…`) verifies as written.
    for local in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        if local not in sans:
            sans.append(local)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_file(key_file, pem(key), private=True)
    write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return True


def dane_client_context(min_tls: str = "TLSv1.2") -> ssl.SSLContext:
    """For DANE routes (RFC 7672 §3): the certificate is authenticated by TLSA records
    after the handshake, not by the CA store; SNI still names the MX (§8.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = TLS_VERSIONS[min_tls]
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def relaxed_client_context() -> ssl.SSLContext:
    """Encryption without authentication, for relaxed routes only (an account's explicit,
    logged choice): TLS 1.2+, the certificate is not checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
