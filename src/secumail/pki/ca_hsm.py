"""Secumail's CA with its issuing key on an HSM (any `Signer`; in practice PKCS#11).

The root stays as `CertificateAuthority.create` makes it (a file key that may go offline
once the issuing CA exists). The issuing CA certificate is made for the public key of
the given signer and signed by the root; no issuing-key.pem is written. Afterwards the
CA is used with `CertificateAuthority.load(directory, issuing_signer=signer)`.

The certificate profile (names, extensions, validity) is `pki.ca`'s own, so an issuing
CA on an HSM looks exactly like one with a file key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secumail.errors import ConfigError, ConflictError
from secumail.pki.ca import (
    CA_KEY_TYPES,
    ISSUING_CERT,
    ISSUING_YEARS,
    ROOT_CERT,
    ROOT_KEY,
    CertificateAuthority,
    FileKeySigner,
    Signer,
    _aki,
    _ca_builder,
    _ca_name,
    _cert_pem,
    _check_pair,
    _hash_for,
    _key_pem,
    _locked,
    _new_ca_key,
    _read_cert,
    _self_signed_root,
    _write,
    _years_from_now,
    as_private_key,
)


def create_with_hsm_issuing_key(
    directory: Path, org_name: str, signer: Signer, *, root_key_type: str = "ec"
) -> CertificateAuthority:
    """Make (or complete) a CA in `directory` whose issuing key is `signer`.

    A missing root is made with a file key of `root_key_type`. An existing issuing CA
    for the same key is kept (idempotent); one for another key is refused
    (ConflictError): move issuing.pem and issuing-key.pem away first to re-certify.
    """
    if root_key_type not in CA_KEY_TYPES:
        raise ValueError(f"unknown CA key type {root_key_type!r}; expected one of {CA_KEY_TYPES}")
    if not org_name.strip():
        raise ValueError("org_name must not be empty")
    public = signer.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(f"an issuing CA key must be RSA or EC, not {type(public).__name__}")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(directory):
        if not (directory / ROOT_CERT).exists():
            if (directory / ISSUING_CERT).exists():
                raise ConfigError(f"{directory}: {ISSUING_CERT} exists without {ROOT_CERT}")
            root_key = _new_ca_key(root_key_type)
            _write(directory / ROOT_KEY, _key_pem(root_key), private=True)
            _write(directory / ROOT_CERT, _cert_pem(_self_signed_root(root_key, org_name)))
        if (directory / ISSUING_CERT).exists():
            try:
                _check_pair(_read_cert(directory / ISSUING_CERT), signer, "issuing CA")
            except ConfigError as exc:
                raise ConflictError(
                    f"{directory} holds an issuing CA for another key; move {ISSUING_CERT} "
                    "and issuing-key.pem away to certify the HSM key"
                ) from exc
        else:
            _certify_issuing(directory, org_name, signer)
    return CertificateAuthority.load(directory, issuing_signer=signer)


def _certify_issuing(directory: Path, org_name: str, signer: Signer) -> None:
    root = _read_cert(directory / ROOT_CERT)
    root_signer = FileKeySigner.load(directory / ROOT_KEY)
    _check_pair(root, root_signer, "root CA")
    not_after = min(_years_from_now(ISSUING_YEARS), root.not_valid_after_utc)
    if not_after <= datetime.now(UTC) + timedelta(days=1):
        raise ConfigError("the root CA expires within a day: it cannot certify an issuing CA")
    cert = (
        _ca_builder(
            _ca_name(org_name, "Secumail S/MIME Issuing CA"),
            signer.public_key(),
            not_after,
            path_length=0,
        )
        .issuer_name(root.subject)
        .add_extension(_aki(root), critical=False)
        .sign(as_private_key(root_signer), _hash_for(root_signer.public_key()))
    )
    _write(directory / ISSUING_CERT, _cert_pem(cert))
