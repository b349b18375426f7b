"""`host:port` settings: `127.0.0.1:587`, `[::1]:587`, `0.0.0.0:465`, or a bare host."""

from __future__ import annotations


def parse_host_port(entry: str, default_port: int | None = None) -> tuple[str, int]:
    """(host, port); a bare host takes `default_port` (ValueError when there is none)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, ""  # a bare name, IPv4 or unbracketed IPv6 address
    if not port:
        if default_port is None:
            raise ValueError(f"{entry!r} needs a port (host:port)")
        return host, default_port
    return host, int(port)
