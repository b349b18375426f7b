"""GDPR storage limitation (Art. 5(1)(e)): the metadata of finished messages is kept for
its account's retention period, then removed.

A message goes once it is finished (every recipient has a final status: `finished_at`
is set and none is `queued` or `deferred`) and `finished_at` is older than the account's
`retention_days` (or the gateway's default). With it go — by cascade — its recipients,
events, delivery attempts and signed evidence: evidence is metadata the customer may need
as proof of delivery, so it is kept exactly as long as the message it proves (export it
with `secumail evidence export` within the period to keep it longer). A message still in
delivery is never touched, however old.

Also removed after the same period: webhook deliveries that are settled (delivered or
failed), account events (they name suppressed addresses) and API idempotency records;
the test address's rate-limit rows once their hour is over (`store/test_replies.py`).
The audit log is not purged: it is the record of who did what, and it holds no message
metadata (see `store/audit.py`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from secumail.store.database import Database
from secumail.store.test_replies import WINDOW

DAY = 86400.0
CHUNK = 500  # messages per transaction: a purge never holds the writer for long


@dataclass(slots=True)
class PurgeReport:
    """What one purge removed (counts only)."""

    messages: int = 0
    recipients: int = 0
    webhook_deliveries: int = 0
    account_events: int = 0
    idempotency_keys: int = 0
    tls_reports_received: int = 0
    by_account: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return (
            self.messages
            + self.webhook_deliveries
            + self.account_events
            + self.idempotency_keys
            + self.tls_reports_received
        )

    def as_detail(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "recipients": self.recipients,
            "webhook_deliveries": self.webhook_deliveries,
            "account_events": self.account_events,
            "idempotency_keys": self.idempotency_keys,
            "tls_reports_received": self.tls_reports_received,
        }


# The cut-off per account, in SQL: finished before now - retention.
_EXPIRED = """
    SELECT m.id, COALESCE(m.account_id, '') AS account FROM messages m
    LEFT JOIN accounts a ON a.id = m.account_id
    WHERE m.finished_at IS NOT NULL
      AND m.finished_at < ? - COALESCE(a.retention_days, ?) * 86400.0
      AND NOT EXISTS (
        SELECT 1 FROM recipients r
        WHERE r.message_id = m.id AND r.status IN ('queued', 'deferred')
      )
    LIMIT ?
"""


class MetadataRetention:
    def __init__(self, db: Database, default_days: int) -> None:
        self.db = db
        self.default_days = default_days

    def _purge_messages(self, c: sqlite3.Connection, now: float) -> PurgeReport:
        report = PurgeReport()
        rows = c.execute(_EXPIRED, (now, self.default_days, CHUNK)).fetchall()
        if not rows:
            return report
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        report.recipients += c.execute(
            f"SELECT COUNT(*) FROM recipients WHERE message_id IN ({marks})",  # noqa: S608
            ids,
        ).fetchone()[0]
        # ON DELETE CASCADE: recipients, events, attempts, evidence.
        c.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)  # noqa: S608
        for r in rows:
            report.by_account[r["account"]] = report.by_account.get(r["account"], 0) + 1
        report.messages += len(ids)
        return report

    def _purge_the_rest(self, c: sqlite3.Connection, now: float) -> PurgeReport:
        report = PurgeReport()
        args = (now, self.default_days)
        report.webhook_deliveries += c.execute(
            "DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'failed')"
            " AND created_at < ? - COALESCE((SELECT a.retention_days FROM webhooks w"
            " JOIN accounts a ON a.id = w.account_id WHERE w.id = webhook_id), ?) * 86400.0",
            args,
        ).rowcount
        report.account_events += c.execute(
            "DELETE FROM account_events WHERE at < ? - COALESCE((SELECT a.retention_days"
            " FROM accounts a WHERE a.id = account_id), ?) * 86400.0",
            args,
        ).rowcount
        report.idempotency_keys += c.execute(
            "DELETE FROM idempotency WHERE created_at < ? - COALESCE((SELECT a.retention_days"
            " FROM accounts a WHERE a.id = account_id), ?) * 86400.0",
            args,
        ).rowcount
        # The test address's rate-limit rows (sender domain, client network) live an hour.
        c.execute("DELETE FROM test_replies WHERE sent_at <= ?", (now - WINDOW,))
        # TLS reports others sent the gateway (no account): the gateway's default period.
        report.tls_reports_received += c.execute(
            "DELETE FROM tlsrpt_received WHERE received_at < ? - ? * 86400.0", args
        ).rowcount
        return report

    async def purge(self, now: float | None = None) -> PurgeReport:
        """Remove what is past its retention, a chunk per transaction."""
        now = time.time() if now is None else now
        report = PurgeReport()
        while True:
            part = await self.db.run(lambda c: self._purge_messages(c, now))
            report.messages += part.messages
            report.recipients += part.recipients
            for account, n in part.by_account.items():
                report.by_account[account] = report.by_account.get(account, 0) + n
            if part.messages < CHUNK:
                break
        rest = await self.db.run(lambda c: self._purge_the_rest(c, now))
        report.webhook_deliveries = rest.webhook_deliveries
        report.account_events = rest.account_events
        report.idempotency_keys = rest.idempotency_keys
        report.tls_reports_received = rest.tls_reports_received
        return report
