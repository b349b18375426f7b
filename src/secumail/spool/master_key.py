"""The master key that wraps every message's data key; kept in a file outside the database."""

from __future__ import annotations

import os
from pathlib import Path

from secumail.errors import ConfigError
from secumail.keyfiles import write_file

KEY_SIZE = 32


def ensure_master_key(path: Path) -> None:
    """Create the key file (mode 0600) when absent; idempotent."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_file(path, os.urandom(KEY_SIZE), private=True, overwrite=False)


def load_master_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read master key {path}: {exc} (run `secumail init`)") from exc
    if len(key) != KEY_SIZE:
        raise ConfigError(f"master key {path} must be {KEY_SIZE} bytes")
    return key
