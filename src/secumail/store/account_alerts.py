"""Open alerts per account: what the account was told about and has not yet recovered from.

An alert is about one thing (`about`: a credential id, a domain) of one kind. Raising an
alert that is open, or resolving one that is not, fails the transaction it is part of
(`AlertUnchanged`), so the event and the mail that go with it are written exactly once
even when two processes notice the same thing at the same moment. Table `account_alerts`
(store/schema.py); removed with the account and by GDPR erasure of the account.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from secumail.errors import ConflictError
from secumail.store.database import Database, Op


class AlertUnchanged(ConflictError):
    """The alert is already in the state asked for."""


@dataclass(frozen=True, slots=True)
class OpenAlert:
    account_id: str
    kind: str
    about: str
    detail: dict[str, Any]
    raised_at: float


class AccountAlertStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def raise_op(account_id: str, kind: str, about: str, detail: dict[str, Any], at: float) -> Op:
        def op(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "INSERT OR IGNORE INTO account_alerts (account_id, kind, about, detail, raised_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (account_id, kind, about, json.dumps(detail), at),
            )
            if cur.rowcount == 0:
                raise AlertUnchanged(f"{kind} alert about {about} is open already")

        return op

    @staticmethod
    def resolve_op(account_id: str, kind: str, about: str) -> Op:
        def op(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "DELETE FROM account_alerts WHERE account_id = ? AND kind = ? AND about = ?",
                (account_id, kind, about),
            )
            if cur.rowcount == 0:
                raise AlertUnchanged(f"no open {kind} alert about {about}")

        return op

    async def open(self, account_id: str | None = None, kind: str | None = None) -> list[OpenAlert]:
        """The open alerts, of one account and kind when given."""
        sql = "SELECT * FROM account_alerts WHERE 1 = 1"
        args: list[str] = []
        if account_id is not None:
            sql += " AND account_id = ?"
            args.append(account_id)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        rows = await self.db.read(lambda c: c.execute(sql + " ORDER BY raised_at", args).fetchall())
        return [
            OpenAlert(r["account_id"], r["kind"], r["about"], json.loads(r["detail"]), r["raised_at"])
            for r in rows
        ]

    async def is_open(self, account_id: str, kind: str, about: str) -> bool:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT 1 FROM account_alerts WHERE account_id = ? AND kind = ? AND about = ?",
                (account_id, kind, about),
            ).fetchone()
        )
        return row is not None
