"""Secumail's CA with its issuing key on an HSM (any `Signer`; in practice PKCS#11).

The root stays as `CertificateAuthority.create` makes it (a file key that may go offline
once the issuing CA exists). The issuing CA certificate is made for the public key of
the given signer and signed by the root; no issuing-key.pem is written. Afterwards the
CA is used with `CertificateAuthority.load(directory, issuing_signer=signer)`.

The steps and the certificate profile (names, extensions, validity) are `pki.ca`'s own
(`check_new_ca`, `root_ready`, `certify_issuing`), so an issuing CA on an HSM looks
exactly like one with a file key; what differs is only here: the key is the signer's,
and an issuing CA for another key is refused rather than kept.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secumail.errors import ConfigError, ConflictError
from secumail.pki.ca import (
    ISSUING_CERT,
    CertificateAuthority,
    Signer,
    certify_issuing,
    check_new_ca,
    check_pair,
    read_cert,
    root_ready,
    write_issuing_cert,
)


def create_with_hsm_issuing_key(
    directory: Path, org_name: str, signer: Signer, *, root_key_type: str = "ec"
) -> CertificateAuthority:
    """Make (or complete) a CA in `directory` whose issuing key is `signer`.

    A missing root is made with a file key of `root_key_type`. An existing issuing CA
    for the same key is kept (idempotent); one for another key is refused
    (ConflictError): move issuing.pem and issuing-key.pem away first to re-certify.
    """
    check_new_ca(org_name, root_key_type)
    public = signer.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(f"an issuing CA key must be RSA or EC, not {type(public).__name__}")
    with root_ready(directory, org_name, root_key_type) as directory:
        if (directory / ISSUING_CERT).exists():
            try:
                check_pair(read_cert(directory / ISSUING_CERT), signer, "issuing CA")
            except ConfigError as exc:
                raise ConflictError(
                    f"{directory} holds an issuing CA for another key; move {ISSUING_CERT} "
                    "and issuing-key.pem away to certify the HSM key"
                ) from exc
        else:
            write_issuing_cert(directory, certify_issuing(directory, org_name, public))
    return CertificateAuthority.load(directory, issuing_signer=signer)
