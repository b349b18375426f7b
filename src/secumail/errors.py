"""The one exception tree of the package.

    SecumailError                    base of every error Secumail raises on purpose
    ├── ConfigError                  the settings are invalid or a file they name is missing
    │   └── ListenError              a listen address cannot be used (in use, not permitted)
    ├── StoreError                   metadata storage failed
    │   └── NotFound                 an account, domain, credential or message does not exist
    ├── ConflictError                the thing to create exists already
    ├── SpoolError                   an encrypted body cannot be written, read or is gone
    ├── EvidenceError                a delivery-evidence token is malformed or does not verify
    ├── AdmissionRefused             a queue is over its bound: answer 451 4.3.2 / 503
    ├── BusUnavailable               the queues (NATS) cannot be reached: refuse new work for now
    ├── ScannerUnavailable           a virus or spam scanner did not answer: wait and retry
    ├── StsError                     MTA-STS discovery failed (mail.mta_sts; RFC 8460 result type)
    │   └── StsFetchError            fetching the policy over HTTPS failed (net.mta_sts_fetch)
    ├── DnsError                     a lookup failed
    │   ├── DnsTemporaryError        SERVFAIL, timeout: try again later
    │   └── DnsPermanentError        NXDOMAIN and friends: the name does not exist
    └── DeliveryError                one delivery attempt to one MX failed
        ├── ConnectError             TCP could not be established (temporary)
        ├── InsecureRoute            the MX offers no secure route (no STARTTLS, bad
        │                            certificate, old TLS); never retried in plaintext
        └── SmtpReplyError           the remote server answered 4xx/5xx

Lower-layer exceptions (OSError, ssl.SSLError, dns.exception.*, sqlite3.Error) are
translated into these at the boundary that calls the library.
"""

from __future__ import annotations

import errno
import os


class SecumailError(Exception):
    """Base class of every error Secumail raises on purpose."""


class ConfigError(SecumailError):
    """The settings are invalid, or a file they name cannot be used."""


class ListenError(ConfigError):
    """A listen address cannot be parsed or bound; `address` as the setting gave it."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason

    @classmethod
    def from_os_error(cls, address: str, exc: OSError) -> ListenError:
        # By errno: asyncio rewrites strerror ("error while attempting to bind on …").
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        reason = reason[:1].lower() + reason[1:]  # "address already in use"
        if exc.errno == errno.EACCES:
            reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        return cls(address, reason)


class StoreError(SecumailError):
    """Metadata storage failed."""


class NotFound(StoreError):
    """The account, domain, credential or message does not exist."""


class ConflictError(SecumailError):
    """What should be created exists already."""


class SpoolError(SecumailError):
    """An encrypted message body cannot be written or read, or is gone."""


class EvidenceError(SecumailError):
    """An evidence token is malformed, uses another algorithm or key, or its signature
    does not verify."""


class AdmissionRefused(SecumailError):
    """A queue is over its bound; the caller must answer with a temporary failure."""


class BusUnavailable(SecumailError):
    """The stage queues cannot be reached (NATS down or unreachable): new work is refused
    with a temporary reply and the stages wait; nothing queued is lost."""


class ScannerUnavailable(SecumailError):
    """A virus or spam scanner could not be reached, timed out or answered nonsense: the
    message waits and is scanned again later (never passed on unscanned)."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(f"{engine}: {reason}")
        self.engine = engine
        self.reason = reason


class DnsError(SecumailError):
    """A DNS lookup failed."""


class DnsTemporaryError(DnsError):
    """SERVFAIL, timeout or an unreachable resolver: try again later."""


class DnsPermanentError(DnsError):
    """The name does not exist (NXDOMAIN) or cannot be used."""


class DeliveryError(SecumailError):
    """One delivery attempt to one MX failed.

    Carries what RFC 3464 and the sender need: whether it is permanent, the SMTP reply
    code and enhanced status code, the command that failed and the remote's text.
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool,
        code: int = 0,
        enhanced: str = "",
        command: str = "",
        line: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code
        self.enhanced = enhanced
        self.command = command
        self.line = line


class ConnectError(DeliveryError):
    """The TCP connection could not be established, or broke; always temporary."""

    def __init__(self, reason: str, *, command: str = "connect") -> None:
        super().__init__(reason, permanent=False, enhanced="4.4.1", command=command)


class InsecureRoute(DeliveryError):
    """The MX offers no secure route: no STARTTLS, an invalid certificate, TLS too old."""

    def __init__(
        self, reason: str, *, command: str = "starttls", rfc8460: str = "", enhanced: str = "5.7.10"
    ) -> None:
        super().__init__(reason, permanent=True, enhanced=enhanced, command=command)
        self.rfc8460 = rfc8460


class SmtpReplyError(DeliveryError):
    """The remote server refused with a 4xx or 5xx reply."""
