"""The health model: checks, their status and part, the report, and how values found in DNS are cleaned."""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_FOUND = 300  # characters of a DNS answer shown (a DKIM key is ~410: shortened)
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but weaker than it should be (recommended)
    FAIL = "fail"  # broken
    INFO = "info"  # a fact worth knowing, nothing to do


class Part(enum.StrEnum):
    SENDING = "sending"  # what Secumail's mail relies on: a failure raises the alert
    INBOUND = "inbound"  # the customer's own MX: shown, not alerted


@dataclass(frozen=True, slots=True)
class HealthCheck:
    id: str
    part: Part
    status: Status
    record: str  # the DNS name or host looked at
    found: str = ""  # what was there, plain text, cleaned
    problem: str = ""  # why it is not ok: a key of the advice texts ("" when ok)
    expected: str = ""  # what should be there, when Secumail knows it

    def __post_init__(self) -> None:
        object.__setattr__(self, "found", clean(self.found))
        object.__setattr__(self, "record", clean(self.record, 255))

    @property
    def key(self) -> str:
        """The check of one record: `auth_dkim_exist:sm202612r._domainkey.hospital.test`."""
        return f"{self.id}:{self.record}"


# Checks whose failure always raises the alert: without them the domain does not send
# (ownership) or its mail is not signed (a DKIM key Secumail signs with).
REQUIRED = frozenset({"secumail_ownership", "auth_dkim_exist"})


@dataclass(slots=True)
class HealthReport:
    """The checks of one round. `watched` holds the keys of the sending checks that were ok
    in this or an earlier round: a record that worked and now fails is *broken* (the
    alert), a recommended record never published (SPF, DMARC) is shown, not alerted."""

    domain: str
    checked_at: float
    checks: list[HealthCheck] = field(default_factory=list)
    watched: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.watched = self.watched | {
            c.key for c in self.checks if c.part is Part.SENDING and c.status is Status.OK
        }

    def alerting(self, check: HealthCheck) -> bool:
        return (
            check.part is Part.SENDING
            and check.status is Status.FAIL
            and (check.id in REQUIRED or check.key in self.watched)
        )

    @property
    def problems(self) -> list[HealthCheck]:
        """The broken sending records: what the `domain_dns_error` alert is about."""
        return [c for c in self.checks if self.alerting(c)]

    @property
    def status(self) -> Status:
        statuses = {c.status for c in self.checks}
        for s in (Status.FAIL, Status.WARN):
            if s in statuses:
                return s
        return Status.OK

    def part(self, part: Part) -> list[HealthCheck]:
        return [c for c in self.checks if c.part is part]

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "checked_at": self.checked_at,
            "status": str(self.status),
            "checks": [
                {
                    **asdict(c),
                    "part": str(c.part),
                    "status": str(c.status),
                    "alerting": self.alerting(c),
                }
                for c in self.checks
            ],
            "watched": sorted(self.watched),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        return cls(
            str(data["domain"]),
            float(data["checked_at"]),
            [
                HealthCheck(
                    id=str(c["id"]),
                    part=Part(c["part"]),
                    status=Status(c["status"]),
                    record=str(c["record"]),
                    found=str(c.get("found", "")),
                    problem=str(c.get("problem", "")),
                    expected=str(c.get("expected", "")),
                )
                for c in data["checks"]
            ],
            frozenset(str(w) for w in data.get("watched", [])),
        )


def clean(text: str, limit: int = MAX_FOUND) -> str:
    """`text` without control or line-separator characters (a TXT record may hold CR LF:
    it must not become a line of the alert mail or the terminal), at most `limit` long."""
    out = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _joined(values: Sequence[str]) -> str:
    return " | ".join(values) if values else ""
