"""S/MIME signing material per sender address: issued on first use, renewed before expiry.

Certificates come from Secumail's own CA (`pki.ca`), valid `days` (default 30) and are
renewed when less than a week remains. The private key is kept sealed under the master
key; certificate and key are cached in memory for the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secumail.pki.ca import CertificateAuthority, needs_renewal
from secumail.spool import sealing
from secumail.store.records import SmimeCertRow
from secumail.store.signing import SigningStore


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]


class SmimeIssuer:
    def __init__(
        self,
        ca: CertificateAuthority,
        store: SigningStore,
        master_key: bytes,
        *,
        days: int = 30,
        on_issued: Callable[[str, x509.Certificate], Awaitable[None]] | None = None,
    ) -> None:
        self.ca = ca
        self.on_issued = on_issued  # e.g. the audit log: a certificate of our CA was issued
        self.store = store
        self.days = days
        self._master = master_key
        self._cache: dict[str, SigningMaterial] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def material(self, address: str) -> SigningMaterial:
        """Certificate, key and chain for `address`, issuing or renewing when needed."""
        address = address.lower()
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            now = datetime.now(UTC)
            hit = self._cache.get(address)
            if hit is not None and not needs_renewal(hit.cert, now):
                return hit
            row = await self.store.smime_cert(address)
            if row is not None:
                # Parsing and validating the RSA key takes tens of ms: not on the loop.
                material = await asyncio.to_thread(self._open, row)
                if not needs_renewal(material.cert, now):
                    self._cache[address] = material
                    return material
            issued = await asyncio.to_thread(self.ca.issue_smime, address, days=self.days)
            sealed = sealing.wrap_key(self._master, f"smime:{address}", issued.key_pem())
            await self.store.put_smime_cert(
                SmimeCertRow(
                    address,
                    issued.cert_pem().decode(),
                    issued.chain_pem().decode(),
                    sealed,
                    issued.cert.not_valid_after_utc.timestamp(),
                    time.time(),
                )
            )
            material = SigningMaterial(issued.cert, issued.key, issued.chain)
            self._cache[address] = material
            if self.on_issued is not None:
                await self.on_issued(address, issued.cert)
            return material

    def _open(self, row: SmimeCertRow) -> SigningMaterial:
        pem = sealing.unwrap_key(self._master, f"smime:{row.address}", row.sealed_key)
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(row.cert_pem.encode())
        chain = x509.load_pem_x509_certificates(row.chain_pem.encode()) if row.chain_pem else []
        return SigningMaterial(cert, key, chain)
