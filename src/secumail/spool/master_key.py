"""The master key that wraps every message's data key; kept in a file outside the database."""

from __future__ import annotations

import os
from pathlib import Path

from secumail.errors import ConfigError

KEY_SIZE = 32


def ensure_master_key(path: Path) -> None:
    """Create the key file (mode 0600) when absent; idempotent."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(KEY_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)


def load_master_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read master key {path}: {exc} (run `secumail init`)") from exc
    if len(key) != KEY_SIZE:
        raise ConfigError(f"master key {path} must be {KEY_SIZE} bytes")
    return key
