"""Writing key material to disk: owner-only, atomic, durable. One place for every key
file Secumail makes (master key, gateway TLS key, API token key, evidence key, CA)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def write_file(path: Path, data: bytes, *, private: bool, overwrite: bool = True) -> None:
    """Write through a temporary file, fsync, rename: the file is whole or absent.
    Private files are mode 0600; with `overwrite` False an existing file raises
    FileExistsError and is left alone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(str(path))
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(str(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def pem(key: PrivateKeyTypes) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (for files protected by their mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
