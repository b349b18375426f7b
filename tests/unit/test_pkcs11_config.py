"""Where the PKCS#11 PIN comes from: an environment variable or a file, never both."""

from __future__ import annotations

from pathlib import Path

import pytest

from secumail.errors import ConfigError
from secumail.pki.pkcs11_token import Pkcs11Config, pin_from


def test_pin_from_environment() -> None:
    assert pin_from(env="HSM_PIN", environ={"HSM_PIN": "12 34"}) == "12 34"


@pytest.mark.parametrize("environ", [{}, {"HSM_PIN": ""}])
def test_missing_or_empty_variable_is_named(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="PIN variable HSM_PIN is not set or empty"):
        pin_from(env="HSM_PIN", environ=environ)


@pytest.mark.parametrize(
    ("content", "pin"),
    [(b"1234\n", "1234"), (b"1234\r\n", "1234"), (b"1234", "1234"), (b" 12 34 \n", " 12 34 ")],
)
def test_pin_from_file_drops_one_line_end(tmp_path: Path, content: bytes, pin: str) -> None:
    path = tmp_path / "pin"
    path.write_bytes(content)
    assert pin_from(file=path) == pin


@pytest.mark.parametrize("content", [b"", b"\n", b"1234\n5678\n", b"\xff\xfe"])
def test_unusable_pin_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pin"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=str(path)):
        pin_from(file=path)


def test_unreadable_pin_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the PKCS#11 PIN file .*absent"):
        pin_from(file=tmp_path / "absent")


def test_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one place"):
        pin_from()
    with pytest.raises(ConfigError, match="exactly one place"):
        pin_from(env="X", file=tmp_path / "pin", environ={"X": "1"})


def test_config_never_shows_its_pin(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("s3cret-pin\n")
    config = Pkcs11Config.with_pin_from(
        "/usr/lib/softhsm/libsofthsm2.so", "ca", file=tmp_path / "pin"
    )
    assert config.pin == "s3cret-pin"
    assert "s3cret-pin" not in repr(config) and "s3cret-pin" not in str(config)
