"""Events about an account rather than a message (a domain whose DNS records are missing):
written here, sent to the account's webhooks by pipeline/webhooks.py.

Table `account_events` (store/schema.py); removed with the account's retention period
(store/retention.py) and by GDPR erasure (store/personal_data.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from secumail.store.database import Database, Op


class AccountEventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, account_id: str, kind: str, detail: dict[str, Any]) -> None:
        await self.db.run(self.record_op(account_id, kind, detail))

    @staticmethod
    def record_op(account_id: str, kind: str, detail: dict[str, Any]) -> Op:
        """The same write, to commit with others."""
        at = time.time()
        return lambda c: c.execute(
            "INSERT INTO account_events (account_id, kind, detail, at) VALUES (?, ?, ?, ?)",
            (account_id, kind, json.dumps(detail), at),
        )
