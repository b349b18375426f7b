"""The secure-route decision for one recipient domain, as data (sans-I/O).

Today one method exists: `verified` — STARTTLS, TLS 1.2 or newer, a certificate chain to
a trusted root, and the certificate naming the MX host (the baseline route). DANE
(RFC 7672) and MTA-STS (RFC 8461) slot in as further methods chosen per MX in
`plan_routes`; the deliver stage only executes the plan.

`conclude()` turns what happened at each MX into the recipient's fate:
- a transaction took place over a secure route → the remote server's replies decide;
- every MX was reached and none offered a secure route → refused_insecure, at once;
- otherwise (some MX unreachable or answering 4xx) → deferred, to be retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RouteMethod(enum.StrEnum):
    DANE = "dane"
    MTA_STS = "mta-sts"
    VERIFIED = "verified"
    # Below verified TLS: only for accounts that explicitly allow it (and the message asks,
    # e.g. "TLS-Required: No", RFC 8689 §4.2.1). TLS when offered, unverified; else plaintext.
    RELAXED = "relaxed"

    @property
    def authenticated(self) -> bool:
        return self is not RouteMethod.RELAXED


@dataclass(frozen=True, slots=True)
class MxRoute:
    """How to reach one MX host securely."""

    host: str
    preference: int
    method: RouteMethod

    @property
    def policy_key(self) -> str:
        return self.method.value


def plan_routes(mx_hosts: list[tuple[int, str]], *, relaxed: bool = False) -> list[MxRoute]:
    """The route to attempt per MX, in preference order (baseline: verified TLS)."""
    method = RouteMethod.RELAXED if relaxed else RouteMethod.VERIFIED
    return [MxRoute(host, pref, method) for pref, host in mx_hosts]


class MxOutcome(enum.Enum):
    TRANSACTION = "transaction"  # secure connection made; per-recipient replies exist
    INSECURE = "insecure"  # reached, but no secure route (definite)
    TEMPORARY = "temporary"  # unreachable, timeout, 4xx before the transaction
    PERMANENT = "permanent"  # 5xx before any recipient (e.g. greeting 554)


class DomainFate(enum.Enum):
    TRANSACTION = "transaction"
    REFUSED_INSECURE = "refused_insecure"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


def conclude(outcomes: list[MxOutcome]) -> DomainFate:
    if MxOutcome.TRANSACTION in outcomes:
        return DomainFate.TRANSACTION
    if outcomes and all(o is MxOutcome.INSECURE for o in outcomes):
        return DomainFate.REFUSED_INSECURE
    if MxOutcome.TEMPORARY in outcomes or not outcomes:
        return DomainFate.DEFERRED
    if MxOutcome.PERMANENT in outcomes and MxOutcome.INSECURE not in outcomes:
        return DomainFate.BOUNCED
    return DomainFate.REFUSED_INSECURE
