"""TLS contexts for both directions, and the gateway's own certificate.

Inbound: TLS 1.2+ with forward-secret AEAD ciphers only (NCSC-NL TLS guidelines 2021,
"good": ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites are all "good"), no
compression, no renegotiation.

Outbound: the baseline secure route (RFC 8461-style PKIX): TLS 1.2+, a chain to a
trusted root (the system store plus `tls.trust_file`), the certificate naming the MX.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secumail.errors import ConfigError
from secumail.keyfiles import pem, write_file

SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load gateway certificate {cert_file}: {exc}") from exc
    return ctx


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
