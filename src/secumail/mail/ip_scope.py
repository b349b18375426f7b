"""Whether an IP address is a public unicast address: our own table, not the interpreter's.

Python's `ipaddress.is_global` changed between patch releases and, in 3.11, calls
NAT64 (64:ff9b::/96), 6to4 (2002::/16) and IPv4-compatible (::/96) addresses global even
when they embed 127.0.0.1 or 169.254.169.254. A server-side request (a webhook) must
never reach an internal host, so the decision is made here from the IANA special-purpose
registries (RFC 6890 and its updates), and tested.

IPv6 is judged by an allow-list: only global unicast (2000::/3, RFC 4291 §2.4) outside the
special ranges counts. Addresses that carry an IPv4 address inside them (mapped,
compatible, NAT64, 6to4, Teredo) are never public for this purpose: an IPv6 host name of
a webhook has no business resolving to one.
"""

from __future__ import annotations

import ipaddress

# IANA IPv4 Special-Purpose Address Registry (RFC 6890 §2.2.2, RFC 8190), plus multicast
# (RFC 5771) and the reserved 240/4.
_IPV4_NOT_PUBLIC = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Inside 2000::/3 but not a host on the public internet (IANA IPv6 Special-Purpose
# Address Registry): IETF protocol assignments incl. Teredo (2001::/23, 2001::/32),
# documentation (2001:db8::/32, 3fff::/20), 6to4 (2002::/16), SRv6 SIDs (5f00::/16).
_IPV6_NOT_PUBLIC = [
    ipaddress.IPv6Network(n)
    for n in ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16")
]


def is_public(address: str) -> bool:
    """True for a public unicast address; False for anything special, or not an address."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _IPV4_NOT_PUBLIC)
    if ip not in _IPV6_GLOBAL_UNICAST:
        return False  # ::1, ::/96, ::ffff:0:0/96, 64:ff9b::/96, fc00::/7, fe80::/10, ff00::/8 …
    return not any(ip in net for net in _IPV6_NOT_PUBLIC)


def client_network(ip: str, *, v4_prefix: int = 24, v6_prefix: int = 48) -> str:
    """The network a client address counts under for per-client limits: an IPv4 /24 and an
    IPv6 /48 by default (one site), IPv4-mapped IPv6 as IPv4. Not an address: as given."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = v4_prefix if isinstance(addr, ipaddress.IPv4Address) else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
