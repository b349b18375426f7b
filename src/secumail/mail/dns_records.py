"""The DNS records a customer publishes, written so they can be pasted.

- A TXT value is a sequence of character-strings of at most 255 octets each (RFC 1035
  §3.3.14); receivers join them (RFC 6376 §3.6.2.2 for DKIM, RFC 7208 §3.3 for SPF). A
  2048-bit RSA DKIM key is about 410 characters, so zone files and many DNS tools need it
  split. `zone_line` writes the master-file line (RFC 1035 §5.1) with the value split and
  quoted; the plain value is what web forms take.
- `hostname_problem` says why a host name cannot appear in a record other people look up
  (`a:localhost` in SPF authorises nothing).
- `sts_policy_id` makes an MTA-STS policy id (RFC 8461 §3.1) from a time.
"""

from __future__ import annotations

import ipaddress
import time

from secumail.mail.address import AddressError, normalise_domain

MAX_STRING = 255  # RFC 1035 §3.3: a <character-string> is a length octet and that many octets

# Names that never resolve on the public internet: RFC 6761 §6 (test, localhost, invalid,
# example), RFC 6762 (local), RFC 8375 (home.arpa), ICANN's .internal (2024), and the
# private suffixes in common use (SAC 045/062: home, corp, lan; Debian's localdomain).
_PRIVATE_SUFFIXES = (
    "localhost",
    "localdomain",
    "local",
    "test",
    "invalid",
    "example",
    "home.arpa",
    "internal",
    "home",
    "corp",
    "lan",
)
# RFC 2606 §3: reserved second-level names (they resolve, but to nobody's gateway).
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")


def txt_strings(value: str) -> list[str]:
    """`value` as character-strings of at most 255 octets (UTF-8), never splitting a
    character. An empty value is one empty string."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for char in value:
        n = len(char.encode("utf-8"))
        if size + n > MAX_STRING:
            out.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += n
    out.append("".join(current))
    return out


def _quoted(text: str) -> str:
    # RFC 1035 §5.1: inside quotes, `"` and `\` are escaped with a backslash.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def txt_rdata(value: str) -> str:
    """The presentation form of a TXT value: `"…" "…"`, each at most 255 octets."""
    return " ".join(_quoted(s) for s in txt_strings(value))


def zone_line(name: str, rtype: str, value: str) -> str:
    """One master-file line (RFC 1035 §5.1), owner name fully qualified."""
    data = txt_rdata(value) if rtype.upper() == "TXT" else value
    return f"{name.rstrip('.')}. IN {rtype.upper()} {data}"


def hostname_problem(hostname: str) -> str | None:
    """Why `hostname` is not a public DNS name others can look up; None when it is one."""
    text = hostname.strip().rstrip(".")
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        return "it is an IP address, not a host name"
    try:
        name = normalise_domain(text)
    except AddressError:
        if text and "." not in text:
            return "it has a single label"
        return "it is not a valid host name"
    for suffix in _PRIVATE_SUFFIXES:
        if name == suffix or name.endswith("." + suffix):
            return f"names under .{suffix} never resolve on the public internet"
    for domain in _EXAMPLE_DOMAINS:
        if name == domain or name.endswith("." + domain):
            return f"{domain} is reserved for documentation (RFC 2606)"
    return None


def spf_mechanism(hostname: str) -> str:
    """The SPF mechanism that authorises the gateway (RFC 7208 §5.3, §5.6): `a:<host>`,
    or `ip4:`/`ip6:` when the host name is an address (a domain-spec cannot be one)."""
    text = hostname.strip().rstrip(".")
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return f"a:{text}"
    return f"ip{ip.version}:{ip}"


def sts_policy_id(now: float) -> str:
    """An MTA-STS policy id from a time (UTC): `20261207T181000`, within RFC 8461 §3.1's
    1*32(ALPHA / DIGIT). A new id tells senders to fetch the policy again."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))


def tlsrpt_record(hostname: str, local_part: str) -> tuple[str, str]:
    """The TXT record (name, value) that asks other MTAs to send TLS reports about mail to
    ``hostname`` to ``local_part@hostname`` (RFC 8460 §3: ``_smtp._tls.<domain>``)."""
    host = hostname.strip().rstrip(".").lower()
    return f"_smtp._tls.{host}", f"v=TLSRPTv1; rua=mailto:{local_part}@{host}"
