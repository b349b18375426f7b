"""Where the gateway's own signing keys live: files in data_dir (default) or a PKCS#11 HSM.

Two keys matter: the S/MIME CA's issuing key and the delivery-evidence key (Ed25519).
With `pki.pkcs11_module` set, both are made on the token by `secumail init` (never
extractable) and used through `Pkcs11Signer`; the CA's root key stays a file key so it
can be taken offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from secumail.config import PkiSettings
from secumail.errors import ConfigError
from secumail.pki.ca import CertificateAuthority
from secumail.pki.evidence import EvidenceKey

if TYPE_CHECKING:
    from secumail.pki.pkcs11_signer import Pkcs11Signer
    from secumail.pki.pkcs11_token import Pkcs11Config


def hsm_config(pki: PkiSettings) -> Pkcs11Config:
    from secumail.pki.pkcs11_token import Pkcs11Config

    if not pki.pkcs11_token:
        raise ConfigError("pki.pkcs11_token must name the token when pki.pkcs11_module is set")
    if pki.pkcs11_pin_file is not None:
        return Pkcs11Config.with_pin_from(
            pki.pkcs11_module, pki.pkcs11_token, file=pki.pkcs11_pin_file
        )
    return Pkcs11Config.with_pin_from(pki.pkcs11_module, pki.pkcs11_token, env=pki.pkcs11_pin_env)


def _hsm_signer(pki: PkiSettings, label: str, key_type: str, *, create: bool) -> Pkcs11Signer:
    from secumail.pki.pkcs11_signer import generate_keypair, open_signer

    config = hsm_config(pki)
    try:
        return open_signer(config, label)
    except ConfigError:
        if not create:
            raise
    generate_keypair(config, label, key_type)
    return open_signer(config, label)


def create_ca(pki: PkiSettings, directory: Path, org_name: str) -> CertificateAuthority:
    if not pki.pkcs11_module:
        return CertificateAuthority.create(directory, org_name)
    from secumail.pki.ca_hsm import create_with_hsm_issuing_key

    signer = _hsm_signer(pki, pki.ca_key_label, pki.ca_key_type, create=True)
    create_with_hsm_issuing_key(directory, org_name, signer)
    return CertificateAuthority.load(directory, issuing_signer=signer)


def load_ca(pki: PkiSettings, directory: Path) -> CertificateAuthority:
    if not pki.pkcs11_module:
        return CertificateAuthority.load(directory)
    signer = _hsm_signer(pki, pki.ca_key_label, pki.ca_key_type, create=False)
    return CertificateAuthority.load(directory, issuing_signer=signer)


def ensure_evidence_key(pki: PkiSettings, path: Path) -> bool:
    """Make the evidence key where it belongs; True when it was made."""
    if pki.pkcs11_module:
        from secumail.pki.pkcs11_signer import open_signer

        try:
            open_signer(hsm_config(pki), pki.evidence_key_label)
            return False
        except ConfigError:
            _hsm_signer(pki, pki.evidence_key_label, "ed25519", create=True)
            return True
    if path.exists():
        return False
    EvidenceKey.generate().save(path)
    return True


def load_evidence_key(pki: PkiSettings, path: Path) -> EvidenceKey:
    if not pki.pkcs11_module:
        return EvidenceKey.load(path)
    return EvidenceKey(_hsm_signer(pki, pki.evidence_key_label, "ed25519", create=False))
