"""Addresses an account must not send to: hard bounces (added automatically) and manual
entries."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from secumail.store.database import Database, Op


@dataclass(frozen=True, slots=True)
class Suppression:
    account_id: str
    address: str
    reason: str
    origin: str  # "bounce" | "manual"
    message_id: str | None
    created_at: float


def _row(r: sqlite3.Row) -> Suppression:
    return Suppression(
        r["account_id"], r["address"], r["reason"], r["origin"], r["message_id"], r["created_at"]
    )


class SuppressionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, account_id: str, address: str) -> Suppression | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM suppressions WHERE account_id = ? AND address = ?",
                (account_id, address.lower()),
            ).fetchone()
        )
        return None if row is None else _row(row)

    async def list(
        self, account_id: str, *, after: str = "", limit: int = 100
    ) -> list[Suppression]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT * FROM suppressions WHERE account_id = ? AND address > ? ORDER BY address LIMIT ?",
                (account_id, after, limit),
            ).fetchall()
        )
        return [_row(r) for r in rows]

    @staticmethod
    def add_op(
        account_id: str, address: str, reason: str, origin: str, message_id: str | None = None
    ) -> Op:
        """Add (or keep) a suppression; a `suppressed` account event when it is new."""

        def op(c: sqlite3.Connection) -> bool:
            now = time.time()
            cur = c.execute(
                "INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, address.lower(), reason, origin, message_id, now),
            )
            if cur.rowcount:
                c.execute(
                    "INSERT INTO account_events (account_id, kind, detail, at) VALUES (?, 'suppressed', ?, ?)",
                    (
                        account_id,
                        json.dumps(
                            {
                                "address": address.lower(),
                                "reason": reason,
                                "origin": origin,
                                "message_id": message_id,
                            }
                        ),
                        now,
                    ),
                )
            return bool(cur.rowcount)

        return op

    async def add(self, account_id: str, address: str, reason: str, origin: str) -> bool:
        return bool(await self.db.run(self.add_op(account_id, address, reason, origin)))

    async def remove(self, account_id: str, address: str) -> bool:
        return bool(
            await self.db.run(
                lambda c: (
                    c.execute(
                        "DELETE FROM suppressions WHERE account_id = ? AND address = ?",
                        (account_id, address.lower()),
                    ).rowcount
                )
            )
        )
