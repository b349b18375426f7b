"""The gateway's certificate: self-signed on first start only while the operator has not
named one; the operator's own chain is never replaced (docs/api.md, "Installing a real
certificate")."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from secumail.app import initialise
from secumail.config import Settings
from secumail.errors import ConfigError
from secumail.net.tls import ensure_gateway_certificate


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


def test_it_names_the_host_and_this_machines_loopback(tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "gw.crt", tmp_path / "gw.key"
    assert ensure_gateway_certificate(cert_file, key_file, "gw.zorg.example")
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.zorg.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert not ensure_gateway_certificate(cert_file, key_file, "other.example"), "never replaced"
