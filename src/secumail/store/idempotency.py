"""API idempotency keys: the answer given to a request, kept so that the same request
sent again (same key, same body) gets the same answer instead of a second message.

Table `idempotency` (store/schema.py); removed with the account's retention period
(store/retention.py) and by GDPR erasure (store/personal_data.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from secumail.store.database import Database

# (request hash, HTTP status, response body) as remembered
Remembered = tuple[str, int, dict[str, Any]]


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, account_id: str, key: str) -> Remembered | None:
        row = await self.db.run(
            lambda c: c.execute(
                "SELECT request_hash, status, response FROM idempotency"
                " WHERE account_id = ? AND key = ?",
                (account_id, key),
            ).fetchone()
        )
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    async def remember(
        self, account_id: str, key: str, request_hash: str, status: int, response: dict[str, Any]
    ) -> None:
        """Keep the answer given to a request; the first one for a key stays."""
        await self.db.run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, key, request_hash, status, json.dumps(response), time.time()),
            )
        )
