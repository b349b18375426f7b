"""Webhook subscriptions and their deliveries (the outbox the dispatcher works from)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass

from secumail.store.database import Database


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    account_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: float


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    id: int
    webhook_id: str
    event_id: str
    event: str
    payload: str
    status: str  # pending | delivered | failed
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None


def _hook(r: sqlite3.Row) -> Webhook:
    return Webhook(
        r["id"],
        r["account_id"],
        r["url"],
        tuple(json.loads(r["events"])),
        r["secret"],
        r["created_at"],
    )


def _delivery(r: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(
        r["id"],
        r["webhook_id"],
        r["event_id"],
        r["event"],
        r["payload"],
        r["status"],
        r["attempts"],
        r["next_at"],
        r["last_status"],
        r["last_error"],
        r["created_at"],
        r["delivered_at"],
    )


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, account_id: str, url: str, events: list[str], secret: str | None
    ) -> Webhook:
        hook = Webhook(
            "wh_" + secrets.token_hex(8),
            account_id,
            url,
            tuple(events),
            secret or secrets.token_urlsafe(32),
            time.time(),
        )
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO webhooks VALUES (?, ?, ?, ?, ?, ?)",
                (hook.id, account_id, url, json.dumps(list(events)), hook.secret, hook.created_at),
            )
        )
        return hook

    async def subscriptions(self, account_id: str | None = None) -> list[Webhook]:
        def op(c: sqlite3.Connection) -> list[sqlite3.Row]:
            if account_id is None:
                return c.execute("SELECT * FROM webhooks").fetchall()
            return c.execute(
                "SELECT * FROM webhooks WHERE account_id = ? ORDER BY created_at", (account_id,)
            ).fetchall()

        return [_hook(r) for r in await self.db.read(op)]

    async def get(self, hook_id: str) -> Webhook | None:
        row = await self.db.run(
            lambda c: c.execute("SELECT * FROM webhooks WHERE id = ?", (hook_id,)).fetchone()
        )
        return None if row is None else _hook(row)

    async def delete(self, hook_id: str) -> bool:
        return bool(
            await self.db.run(
                lambda c: c.execute("DELETE FROM webhooks WHERE id = ?", (hook_id,)).rowcount
            )
        )

    async def deliveries(self, hook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
                (hook_id, limit),
            ).fetchall()
        )
        return [_delivery(r) for r in rows]

    # -- the dispatcher's side ---------------------------------------------------------
    async def cursor(self, name: str) -> int:
        row = await self.db.read(
            lambda c: c.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def new_events(
        self, after_message_event: int, after_account_event: int, limit: int = 500
    ) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
        """Message events (recipient statuses) and account events after the cursors."""

        def op(c: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            msg = c.execute(
                "SELECT e.id, e.message_id, e.recipient, e.at, e.kind, e.detail, m.account_id, m.api_metadata,"
                " m.dsn_of, m.mail_from FROM events e JOIN messages m ON m.id = e.message_id"
                " WHERE e.id > ? ORDER BY e.id LIMIT ?",
                (after_message_event, limit),
            ).fetchall()
            acc = c.execute(
                "SELECT * FROM account_events WHERE id > ? ORDER BY id LIMIT ?",
                (after_account_event, limit),
            ).fetchall()
            return msg, acc

        return await self.db.read(op)

    async def skip_to_newest(self) -> None:
        """No subscriptions: move the cursors past every event there is (nothing to send,
        nothing to read)."""

        def op(c: sqlite3.Connection) -> None:
            for name, table in (
                ("webhooks:events", "events"),
                ("webhooks:account_events", "account_events"),
            ):
                # Written only when it moves: an idle gateway commits nothing each second.
                c.execute(
                    "INSERT OR REPLACE INTO cursors SELECT ?, COALESCE(MAX(id), 0) FROM "  # noqa: S608 - fixed table names
                    + table
                    + " HAVING COALESCE(MAX(id), 0) IS NOT (SELECT position FROM cursors WHERE name = ?)",
                    (name, name),
                )

        await self.db.run(op)

    async def enqueue(
        self, deliveries: list[tuple[str, str, str, str]], cursors: dict[str, int]
    ) -> None:
        """New deliveries (webhook id, event id, event, payload) and the advanced cursors, at once."""

        def op(c: sqlite3.Connection) -> None:
            now = time.time()
            c.executemany(
                "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, event_id, event, payload, status,"
                " next_at, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                [(h, eid, ev, payload, now, now) for h, eid, ev, payload in deliveries],
            )
            for name, position in cursors.items():
                c.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, position))

        await self.db.run(op)

    async def due(self, limit: int = 50) -> list[WebhookDelivery]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
                (time.time(), limit),
            ).fetchall()
        )
        return [_delivery(r) for r in rows]

    async def record_attempt(
        self,
        delivery_id: int,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        next_at: float | None,
    ) -> None:
        def op(c: sqlite3.Connection) -> None:
            now = time.time()
            state = "delivered" if ok else ("pending" if next_at is not None else "failed")
            c.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_status = ?,"
                " last_error = ?, next_at = COALESCE(?, next_at), delivered_at = ? WHERE id = ?",
                (state, status, error, next_at, now if ok else None, delivery_id),
            )

        await self.db.run(op)
