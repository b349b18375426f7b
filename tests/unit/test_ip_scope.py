"""Our own public/non-public table (IANA special-purpose registries, RFC 6890), so the
webhook SSRF guard holds whatever the interpreter's `ipaddress.is_global` says."""

from __future__ import annotations

import pytest

from secumail.mail.ip_scope import is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "192.0.2.1", "198.18.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
        "::", "::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "::127.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",  # NAT64 (RFC 6052, 8215)
        "2002:7f00:1::1", "2002:0808:0808::1",  # 6to4 (RFC 3056)
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (RFC 4380)
        "2001:db8::1", "3fff::1", "fc00::1", "fd12::1", "fe80::1", "fe80::1%eth0", "ff02::1",
        "100::1", "5f00::1", "not an address", "",
    ],
)
def test_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2a00:1450:4001::1", "2606:4700::1111"])
def test_public_unicast_is_public(address: str) -> None:
    assert is_public(address)
