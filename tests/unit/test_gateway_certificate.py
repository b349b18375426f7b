"""The gateway's certificate: self-signed on first start only while the operator has not
named one; the operator's own chain is never replaced (docs/api.md, "Installing a real
certificate")."""

from __future__ import annotations

from pathlib import Path

import pytest

from secumail.app import initialise
from secumail.config import Settings
from secumail.errors import ConfigError


def settings(data_dir: Path, **tls: Path) -> Settings:
    return Settings.model_validate(
        {"server": {"hostname": "relay.zho.nl", "data_dir": str(data_dir)}, "tls": tls}
    )


def test_without_settings_a_self_signed_certificate_is_made(tmp_path: Path) -> None:
    made = initialise(settings(tmp_path / "var"))
    assert str(tmp_path / "var" / "tls" / "gateway.crt") in made
    assert (tmp_path / "var" / "tls" / "gateway.key").is_file()


def test_a_mistyped_key_file_does_not_overwrite_the_real_chain(tmp_path: Path) -> None:
    chain = tmp_path / "relay.zho.nl.crt"
    chain.write_text("-----BEGIN CERTIFICATE-----\nreal chain\n-----END CERTIFICATE-----\n")
    before = chain.read_bytes()
    with pytest.raises(ConfigError, match=r"tls\.key_file .*relay\.zho\.nl\.kye does not exist"):
        initialise(
            settings(tmp_path / "var", cert_file=chain, key_file=tmp_path / "relay.zho.nl.kye")
        )
    assert chain.read_bytes() == before
    assert not (tmp_path / "relay.zho.nl.kye").exists()
