"""host:port settings (submission.listen, api.listen, dns.nameservers)."""

from __future__ import annotations

import pytest

from secumail.mail.endpoints import parse_host_port


@pytest.mark.parametrize(
    ("entry", "default", "expected"),
    [
        ("127.0.0.1:587", None, ("127.0.0.1", 587)),
        ("0.0.0.0:465", None, ("0.0.0.0", 465)),
        ("[::1]:8443", None, ("::1", 8443)),
        ("[2001:db8::1]", 53, ("2001:db8::1", 53)),
        ("2001:db8::1", 53, ("2001:db8::1", 53)),
        ("resolver.local", 53, ("resolver.local", 53)),
        (" 127.0.0.53:5353 ", 53, ("127.0.0.53", 5353)),
    ],
)
def test_parses(entry: str, default: int | None, expected: tuple[str, int]) -> None:
    assert parse_host_port(entry, default) == expected


def test_a_listener_needs_a_port() -> None:
    with pytest.raises(ValueError, match="needs a port"):
        parse_host_port("127.0.0.1")
