"""What TLS each credential submitted over: the strongest seen and the last (table
`credential_tls`, store/schema.py).

The watcher (`pipeline/sender_watch.py`) keeps this in memory and writes a row only when
something in it changed (in batches), so the message path pays no commit of its own. A
write never lowers the stored best: two processes that each saw part of a sender's
history end with the strongest either saw. Nothing here is personal data or content:
credential ids, protocol and cipher names, times.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from secumail.store.database import Database, Op


@dataclass(slots=True)
class CredentialTls:
    credential_id: str
    account_id: str
    best_version: str
    best_cipher: str
    best_rank: int
    last_version: str
    last_cipher: str
    last_rank: int
    last_channel: str  # "smtp" | "api"
    first_seen: float
    last_seen: float

    def as_dict(self) -> dict[str, object]:
        return {
            "best": {"version": self.best_version, "cipher": self.best_cipher},
            "last": {
                "version": self.last_version,
                "cipher": self.last_cipher,
                "channel": self.last_channel,
            },
            "downgraded": self.last_rank < self.best_rank,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


def _row(r: sqlite3.Row) -> CredentialTls:
    return CredentialTls(
        r["credential_id"],
        r["account_id"],
        r["best_version"],
        r["best_cipher"],
        r["best_rank"],
        r["last_version"],
        r["last_cipher"],
        r["last_rank"],
        r["last_channel"],
        r["first_seen"],
        r["last_seen"],
    )


class CredentialTlsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def save_op(records: list[CredentialTls]) -> Op:
        """Upsert: the last use when it is not older than the stored one, the best only
        when it is stronger (two processes' writes may come in any order)."""

        def op(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO credential_tls (credential_id, account_id, best_version,"
                " best_cipher, best_rank, last_version, last_cipher, last_rank, last_channel,"
                " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (credential_id) DO UPDATE SET"
                " best_version = CASE WHEN excluded.best_rank > best_rank"
                "   THEN excluded.best_version ELSE best_version END,"
                " best_cipher = CASE WHEN excluded.best_rank > best_rank"
                "   THEN excluded.best_cipher ELSE best_cipher END,"
                " best_rank = MAX(best_rank, excluded.best_rank),"
                " last_version = CASE WHEN excluded.last_seen >= last_seen"
                "   THEN excluded.last_version ELSE last_version END,"
                " last_cipher = CASE WHEN excluded.last_seen >= last_seen"
                "   THEN excluded.last_cipher ELSE last_cipher END,"
                " last_rank = CASE WHEN excluded.last_seen >= last_seen"
                "   THEN excluded.last_rank ELSE last_rank END,"
                " last_channel = CASE WHEN excluded.last_seen >= last_seen"
                "   THEN excluded.last_channel ELSE last_channel END,"
                " first_seen = MIN(first_seen, excluded.first_seen),"
                " last_seen = MAX(last_seen, excluded.last_seen)",
                [
                    (
                        r.credential_id,
                        r.account_id,
                        r.best_version,
                        r.best_cipher,
                        r.best_rank,
                        r.last_version,
                        r.last_cipher,
                        r.last_rank,
                        r.last_channel,
                        r.first_seen,
                        r.last_seen,
                    )
                    for r in records
                ],
            )

        return op

    async def get(self, credential_id: str) -> CredentialTls | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM credential_tls WHERE credential_id = ?", (credential_id,)
            ).fetchone()
        )
        return _row(row) if row is not None else None

    async def of_account(self, account_id: str | None = None) -> dict[str, CredentialTls]:
        """By credential id; every credential's when `account_id` is None."""
        if account_id is None:
            rows = await self.db.read(
                lambda c: c.execute("SELECT * FROM credential_tls").fetchall()
            )
        else:
            rows = await self.db.read(
                lambda c: c.execute(
                    "SELECT * FROM credential_tls WHERE account_id = ?", (account_id,)
                ).fetchall()
            )
        return {r["credential_id"]: _row(r) for r in rows}
