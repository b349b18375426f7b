"""The test address's rate limits: replies per sender domain and per client network.

One row per reply sent (the sender's domain and the client's /24 or /48, no address,
nothing of the message), kept for an hour. `reserve` decides and records in one
transaction, so the limit holds across every session and worker process sharing the
database; rows past the hour are purged by the same transaction.
"""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum

from secumail.store.database import Database

WINDOW = 3600.0  # seconds: the limits are per hour


class LimitHit(StrEnum):
    DOMAIN = "rate_domain"  # the reply is not sent: too many to this sender domain
    NETWORK = "rate_network"  # ... too many for messages from this client network


class ReplyRateLimits:
    def __init__(self, db: Database, *, per_domain: int, per_network: int) -> None:
        self.db = db
        self.per_domain = per_domain
        self.per_network = per_network

    async def reserve(
        self, sender_domain: str, network: str, now: float | None = None
    ) -> LimitHit | None:
        """Take one reply slot for (`sender_domain`, `network`); None when taken, else
        which limit is reached (nothing recorded then)."""
        at = time.time() if now is None else now

        def op(c: sqlite3.Connection) -> LimitHit | None:
            c.execute("DELETE FROM test_replies WHERE sent_at <= ?", (at - WINDOW,))
            (by_domain,) = c.execute(
                "SELECT count(*) FROM test_replies WHERE sender_domain = ? AND sent_at > ?",
                (sender_domain, at - WINDOW),
            ).fetchone()
            if by_domain >= self.per_domain:
                return LimitHit.DOMAIN
            (by_network,) = c.execute(
                "SELECT count(*) FROM test_replies WHERE network = ? AND sent_at > ?",
                (network, at - WINDOW),
            ).fetchone()
            if by_network >= self.per_network:
                return LimitHit.NETWORK
            c.execute(
                "INSERT INTO test_replies (sender_domain, network, sent_at) VALUES (?, ?, ?)",
                (sender_domain, network, at),
            )
            return None

        result: LimitHit | None = await self.db.run(op)
        return result
