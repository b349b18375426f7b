"""Blocking DNS lookups for the sender-authentication libraries (SPF, DKIM, DMARC).

pyspf, dkimpy and authheaders are synchronous and look names up themselves; they run in a
worker thread (`pipeline.sender_auth`). Left alone they would ask dnspython's process-wide
default resolver (the system's), not the gateway's. This class is their one way out: a
dnspython resolver *of its own* built from the same `dns.nameservers` setting as
`net.dns.Resolver` ("host" or "host:port"; empty: the system's), handed to each library
explicitly (dkimpy's and authheaders' `dnsfunc`, a `spf.query` subclass's `dns`).
dnspython's default resolver and the libraries' module globals are never touched.

Answers: NXDOMAIN and "no such type" are empty; a timeout or server failure raises
DnsTemporaryError, so the library reports temperror rather than "no record".
"""

from __future__ import annotations

import dns.exception
import dns.nameserver
import dns.resolver

from secumail.errors import DnsTemporaryError
from secumail.net.dns import nameserver_list

MAX_ANSWERS = 50  # records used of one answer at most (hostile zones)


class BlockingDns:
    def __init__(self, nameservers: list[str], timeout: float = 5.0) -> None:
        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = nameserver_list(nameservers)
        else:
            self._resolver = dns.resolver.Resolver()  # a new one from /etc/resolv.conf
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = None

    def records(self, name: str, rdtype: str, timeout: float | None = None) -> list[object]:
        """The rdata of `name`/`rdtype` (CNAMEs followed by the resolver)."""
        try:
            answer = self._resolver.resolve(
                name, rdtype, search=False, lifetime=timeout, raise_on_no_answer=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: DNS timeout") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {type(exc).__name__}") from exc
        return list(answer)[:MAX_ANSWERS]

    def txt(self, name: str, timeout: float | None = None) -> list[bytes]:
        """Each TXT record at `name`, its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b"".join(r.strings) for r in self.records(name, "TXT", timeout)]  # type: ignore[attr-defined]
