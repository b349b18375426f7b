"""Whether a host name is a public DNS name: one the rest of the internet can look up.

The gateway's `server.hostname` is its name in greetings, EHLO and notices, and by default
the domain that signs notices; receivers check it against DNS. A machine's own FQDN is
often `localhost`, a bare host name or a name under a special-use domain, which work
locally and nowhere else.
"""

from __future__ import annotations

from secumail.mail.address import AddressError, normalise_domain

# Top-level names that never resolve on the public internet: RFC 2606 §2 (test, example,
# invalid, localhost), RFC 6761 §6 (special-use), RFC 6762 (local), RFC 8375 (home.arpa),
# ICANN's reservation of `internal` (2024), and the customary private suffixes RFC 6762
# Appendix G lists (lan, home, corp, intranet, private, localdomain).
_NOT_PUBLIC_SUFFIXES = (
    "test",
    "example",
    "invalid",
    "localhost",
    "local",
    "home.arpa",
    "internal",
    "localdomain",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
)


def public_name_problem(name: str) -> str | None:
    """Why `name` is not a public DNS name, or None when it could be one."""
    try:
        domain = normalise_domain(name)
    except AddressError:
        if name.strip().rstrip(".").lower() in ("localhost", ""):
            return f"{name!r} is this machine only"
        if "." not in name.strip().rstrip("."):
            return f"{name!r} is a bare host name, not a fully qualified domain name"
        return f"{name!r} is not a domain name"
    for suffix in _NOT_PUBLIC_SUFFIXES:
        if domain == suffix or domain.endswith("." + suffix):
            return f"{name!r} is under .{suffix}, which the public DNS does not resolve"
    return None
