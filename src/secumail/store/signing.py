"""Rows for signing: DKIM keys (sealed), issued S/MIME certificates, delivery evidence."""

from __future__ import annotations

import sqlite3
import time

from secumail.store.database import Database, Op
from secumail.store.records import DkimKeyRow, EvidenceRow, SmimeCertRow


def _dkim(row: sqlite3.Row) -> DkimKeyRow:
    return DkimKeyRow(
        row["domain"],
        row["selector"],
        row["algorithm"],
        row["sealed_key"],
        row["public_record"],
        row["created_at"],
        row["published_at"],
        row["retired_at"],
    )


class SigningStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- DKIM keys -----------------------------------------------------------------
    async def add_dkim_key(
        self, domain: str, selector: str, algorithm: str, sealed_key: bytes, public_record: str
    ) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO dkim_keys (domain, selector, algorithm, sealed_key, public_record,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (domain, selector, algorithm, sealed_key, public_record, time.time()),
            )
        )

    async def dkim_keys(self, domain: str) -> list[DkimKeyRow]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM dkim_keys WHERE domain = ? ORDER BY created_at, selector", (domain,)
            ).fetchall()
        )
        return [_dkim(r) for r in rows]

    async def mark_dkim_published(self, domain: str, selector: str, published: bool) -> None:
        await self.db.run(
            lambda c: c.execute(
                "UPDATE dkim_keys SET published_at = CASE WHEN ? THEN COALESCE(published_at, ?)"
                " ELSE NULL END WHERE domain = ? AND selector = ?",
                (int(published), time.time(), domain, selector),
            )
        )

    async def retire_dkim_key(self, domain: str, selector: str) -> bool:
        count = await self.db.run(
            lambda c: (
                c.execute(
                    "UPDATE dkim_keys SET retired_at = COALESCE(retired_at, ?)"
                    " WHERE domain = ? AND selector = ?",
                    (time.time(), domain, selector),
                ).rowcount
            )
        )
        return bool(count)

    # -- S/MIME certificates ---------------------------------------------------------
    async def smime_cert(self, address: str) -> SmimeCertRow | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM smime_certs WHERE address = ?", (address,)
            ).fetchone()
        )
        if row is None:
            return None
        return SmimeCertRow(
            row["address"],
            row["cert_pem"],
            row["chain_pem"],
            row["sealed_key"],
            row["not_after"],
            row["issued_at"],
        )

    async def put_smime_cert(self, cert: SmimeCertRow) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO smime_certs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    cert.address,
                    cert.cert_pem,
                    cert.chain_pem,
                    cert.sealed_key,
                    cert.not_after,
                    cert.issued_at,
                ),
            )
        )

    async def forget_smime_certs(self) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM smime_certs"))

    # -- evidence --------------------------------------------------------------------
    @staticmethod
    def put_evidence_op(message_id: str, recipient: str, token: str, kid: str) -> Op:
        return lambda c: c.execute(
            "INSERT OR REPLACE INTO evidence VALUES (?, ?, ?, ?, ?)",
            (message_id, recipient, token, kid, time.time()),
        )

    async def evidence(self, message_id: str, recipient: str | None = None) -> list[EvidenceRow]:
        def op(c: sqlite3.Connection) -> list[sqlite3.Row]:
            if recipient is None:
                return c.execute(
                    "SELECT * FROM evidence WHERE message_id = ? ORDER BY recipient", (message_id,)
                ).fetchall()
            return c.execute(
                "SELECT * FROM evidence WHERE message_id = ? AND recipient = ?",
                (message_id, recipient),
            ).fetchall()

        return [
            EvidenceRow(r["message_id"], r["recipient"], r["token"], r["kid"], r["created_at"])
            for r in await self.db.run(op)
        ]
