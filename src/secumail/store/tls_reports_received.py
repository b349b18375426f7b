"""TLS reports (RFC 8460) other MTAs sent to the gateway's own domain: metadata only.

What is kept of a §4.4 report, every value bounded: organization-name, report-id,
date-range, contact-info, and per policy its type, domain, MX hosts, session counts and
failure details (result-type, sending and receiving IPs, receiving MX name, count). The
mail and the JSON themselves are never stored. A report is kept once per (organization,
report-id): a report sent twice is not counted twice. A client network (an IPv4 /24, an
IPv6 /48) may leave at most `per_client_per_day` reports in any 24 hours: organization
names and report-ids are the sender's to choose, so without this bound one client could
fill the table with made-up reports.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from secumail.mail.tlsrpt import PolicyResult, TlsReport
from secumail.store.database import Database

MAX_TEXT = 255  # names, ids, contact info
MAX_IP = 64
MAX_POLICIES = 100
MAX_MX_HOSTS = 20
MAX_FAILURES = 100  # failure-details entries kept per policy
DAY = 86400.0


class Kept(enum.StrEnum):
    """What `add` did with a report."""

    KEPT = "kept"
    REPEATED = "repeated"  # this organization's report-id is known
    OVER_LIMIT = "over_limit"  # the client network's reports of the last 24 hours


@dataclass(frozen=True, slots=True)
class ReceivedTlsReport:
    organization: str
    report_id: str
    start: float
    end: float
    contact_info: str
    policies: list[dict[str, Any]]
    received_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "report_id": self.report_id,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "contact_info": self.contact_info,
            "received_at": _iso(self.received_at),
            "policies": self.policies,
        }


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _bounded(text: str, limit: int = MAX_TEXT) -> str:
    # Hostile input: no control characters, bounded length.
    return "".join(c for c in text if c.isprintable())[:limit]


def policy_summary(result: PolicyResult) -> dict[str, Any]:
    """One ``policies`` entry as kept: bounded, without the policy strings."""
    return {
        "policy_type": str(result.policy.policy_type),
        "policy_domain": _bounded(result.policy.policy_domain).lower(),
        "mx_host": [_bounded(h) for h in result.policy.mx_host[:MAX_MX_HOSTS]],
        "successful": result.successful,
        "failed": result.failed,
        "failures": [
            {
                "result_type": _bounded(str(detail.result_type), 64),
                "sending_mta_ip": _bounded(detail.sending_mta_ip, MAX_IP),
                "receiving_ip": _bounded(detail.receiving_ip, MAX_IP),
                "receiving_mx_hostname": _bounded(detail.receiving_mx_hostname),
                "failed_sessions": count,
            }
            for detail, count in result.failures[:MAX_FAILURES]
        ],
    }


def _row(r: sqlite3.Row) -> ReceivedTlsReport:
    return ReceivedTlsReport(
        r["organization"],
        r["report_id"],
        r["start_at"],
        r["end_at"],
        r["contact_info"],
        json.loads(r["policies"]),
        r["received_at"],
    )


class TlsReportsReceived:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        report: TlsReport,
        *,
        client_network: str = "",
        per_client_per_day: int = 0,
        received_at: float | None = None,
    ) -> Kept:
        """Keep ``report``'s metadata, unless its organization's report-id is known or the
        client network left ``per_client_per_day`` reports in the last day (0: no bound)."""
        at = time.time() if received_at is None else received_at
        row = (
            _bounded(report.organization_name),
            _bounded(report.report_id),
            report.start.timestamp(),
            report.end.timestamp(),
            _bounded(report.contact_info),
            json.dumps([policy_summary(p) for p in report.policies[:MAX_POLICIES]]),
            at,
            client_network,
        )

        def insert(c: sqlite3.Connection) -> Kept:
            if per_client_per_day:
                (recent,) = c.execute(
                    "SELECT COUNT(*) FROM tlsrpt_received WHERE client_network = ?"
                    " AND received_at > ?",
                    (client_network, at - DAY),
                ).fetchone()
                if recent >= per_client_per_day:
                    return Kept.OVER_LIMIT
            cur = c.execute(
                "INSERT INTO tlsrpt_received (organization, report_id, start_at, end_at,"
                " contact_info, policies, received_at, client_network)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (organization, report_id) DO NOTHING",
                row,
            )
            return Kept.KEPT if cur.rowcount == 1 else Kept.REPEATED

        return await self.db.run(insert)

    async def recent(self, days: float, now: float | None = None) -> list[ReceivedTlsReport]:
        """Reports whose period ended in the last ``days`` days, newest first."""
        since = (time.time() if now is None else now) - days * 86400
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM tlsrpt_received WHERE end_at >= ?"
                " ORDER BY end_at DESC, received_at DESC, id DESC",
                (since,),
            ).fetchall()
        )
        return [_row(r) for r in rows]
