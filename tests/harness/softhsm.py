"""Isolated SoftHSM2 tokens for tests and benchmarks (Debian package `softhsm2`).

`softhsm_token()` initialises a fresh token with its own label, user PIN and SO PIN in a
token directory that belongs to this process alone (a temporary SOFTHSM2_CONF pointing at
a temporary `directories.tokendir`), and returns where to find it: `module`
(/usr/lib/softhsm/libsofthsm2.so), `label`, `pin`.

SoftHSM2 reads SOFTHSM2_CONF and scans its token directory when the module is
initialised (C_Initialize), once per process. So the configuration is made and exported
on the first call and kept for the life of the process; a token added after the module
was loaded in-process is made visible by re-initialising the module, which invalidates
every open session (Secumail's `TokenSessions` logs in again by itself).
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
UTIL = "softhsm2-util"


@dataclass(frozen=True)
class SoftHsmToken:
    """A token on SoftHSM2: what `Pkcs11Config` needs, plus the SO PIN and its files."""

    module: str
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    conf_file: Path
    token_dir: Path


_lock = threading.Lock()
_counter = itertools.count(1)
_conf: Path | None = None


def softhsm_available() -> bool:
    return os.path.exists(MODULE) and shutil.which(UTIL) is not None


def softhsm_token(label: str | None = None, *, pin: str | None = None) -> SoftHsmToken:
    """A newly initialised, empty token in this process's own SoftHSM2 token directory."""
    with _lock:
        conf = _process_conf()
        token = init_token(conf, label or f"secumail-test-{next(_counter)}", pin=pin)
        _refresh_loaded_module()
        return token


def write_conf(base: Path, *, disabled_mechanisms: tuple[str, ...] = ()) -> Path:
    """A SoftHSM2 configuration with its token directory under `base`, optionally with
    some mechanisms switched off (``slots.mechanisms = -CKM_…``) to play a lesser HSM."""
    (base / "tokens").mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = base / "softhsm2.conf"
    lines = [
        f"directories.tokendir = {base / 'tokens'}",
        "objectstore.backend = file",
        "log.level = ERROR",
        "slots.removable = false",
    ]
    if disabled_mechanisms:
        # SoftHSM 2.6.1 reads the leading "-" as part of the first name, which it then
        # does not know and skips: name the first one twice.
        names = (disabled_mechanisms[0], *disabled_mechanisms)
        lines.append("slots.mechanisms = -" + ",".join(names))
    conf.write_text("\n".join(lines) + "\n")
    return conf


def init_token(conf: Path, label: str, *, pin: str | None = None) -> SoftHsmToken:
    """`softhsm2-util --init-token --free` in the token directory of `conf`."""
    if not softhsm_available():
        raise RuntimeError(
            f"SoftHSM2 is not installed ({MODULE}, {UTIL}): apt-get install softhsm2"
        )
    pin = pin or secrets.token_hex(8)
    so_pin = secrets.token_hex(8)
    result = subprocess.run(
        [UTIL, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {result.stderr.strip()}")
    return SoftHsmToken(MODULE, label, pin, so_pin, conf, conf.parent / "tokens")


def _process_conf() -> Path:
    """This process's SoftHSM2 configuration, made and exported on first use."""
    global _conf
    if _conf is None:
        base = Path(tempfile.mkdtemp(prefix="secumail-softhsm-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        _conf = write_conf(base)
        os.environ["SOFTHSM2_CONF"] = str(_conf)
    return _conf


def _refresh_loaded_module() -> None:
    """Make a token added just now visible to a module already initialised in-process."""
    if "pkcs11" not in sys.modules:
        return  # not loaded yet: it will scan the token directory when it is
    from secumail.pki.pkcs11_token import load_module, module_gate

    with module_gate(MODULE):
        load_module(MODULE).reinitialize()
