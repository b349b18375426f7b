"""The last health report of each customer domain (`mail/domain_health/`), kept so that
`secumail domain show` and `GET /v1/domains/{name}/health` read it without probing.

Only metadata: DNS answers about the domain and how its MX servers answered. One row per
domain (table `domain_health`), replaced by each check, removed with the domain.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from secumail.mail.domain_health import HealthReport
from secumail.store.database import Database


class DomainHealthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, account_id: str, report: HealthReport) -> None:
        data = json.dumps(report.to_dict())

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO domain_health (domain, account_id, checked_at, report)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET"
                " account_id = excluded.account_id, checked_at = excluded.checked_at,"
                " report = excluded.report",
                (report.domain, account_id, report.checked_at, data),
            )

        await self.db.run(op)

    async def get(self, domain: str) -> HealthReport | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT report FROM domain_health WHERE domain = ?", (domain,)
            ).fetchone()
        )
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row["report"])
        return HealthReport.from_dict(data)

    async def checked_at(self) -> dict[str, float]:
        """When each domain was last checked."""
        rows = await self.db.read(
            lambda c: c.execute("SELECT domain, checked_at FROM domain_health").fetchall()
        )
        return {r["domain"]: r["checked_at"] for r in rows}
