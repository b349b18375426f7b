"""Queries over the metadata tables (SQLite dialect; the PostgreSQL twin comes with scale-out).

Methods ending in `_op` return a function of a connection, so a caller (the intake) can
put several writes into one durable transaction; the others run alone.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Literal, TypedDict

from secumail.errors import ConflictError, NotFound
from secumail.mail.status import RecipientStatus
from secumail.store.database import Database, Op
from secumail.store.events import event_row, insert_event
from secumail.store.records import (
    Account,
    Attempt,
    AttemptOutcome,
    Credential,
    DeliveryAttempt,
    Domain,
    Event,
    MessageRecord,
    NewMessage,
    RecipientState,
    RecipientUpdate,
)


class DeliveryStats(TypedDict):
    by_outcome: dict[tuple[AttemptOutcome, str], int]  # (outcome, route method or "none")
    tls_versions: dict[str, int]


# The columns of `accounts` an operator may change: every field of `Account` but its identity.
ACCOUNT_SETTINGS = frozenset(f.name for f in fields(Account)) - {"id", "name", "created_at"}


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _account(row: sqlite3.Row) -> Account:
    return Account(
        row["id"],
        row["name"],
        row["locale"],
        row["notify_address"],
        bool(row["store_subject"]),
        row["created_at"],
        smime=bool(row["smime"]),
        gateway_dkim=bool(row["gateway_dkim"]),
        allow_relaxed_tls=bool(row["allow_relaxed_tls"]),
        retention_days=row["retention_days"],
        scan_fail_open=bool(row["scan_fail_open"]),
    )


def _domain(row: sqlite3.Row) -> Domain:
    return Domain(
        row["name"], row["account_id"], row["token"], row["verified_at"], row["created_at"]
    )


def _credential(row: sqlite3.Row) -> Credential:
    return Credential(*_credential_fields(row), scopes=tuple((row["scopes"] or "").split()))


def _credential_fields(
    row: sqlite3.Row,
) -> tuple[str, str, str, str, str, float, float | None]:
    return (
        row["id"],
        row["account_id"],
        row["kind"],
        row["username"],
        row["secret_hash"],
        row["created_at"],
        row["revoked_at"],
    )


def _message_row(c: sqlite3.Connection, message_id: str) -> MessageRecord | None:
    """The message itself, without recipients, events or attempts (None: no such message)."""
    row = c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        return None
    return MessageRecord(
        row["id"],
        row["account_id"],
        row["mail_from"],
        row["header_from"],
        row["size"],
        row["message_id_header"],
        row["subject"],
        bool(row["smtputf8"]),
        row["dsn_of"],
        row["created_at"],
        row["finished_at"],
        row["warned_at"],
        requiretls=bool(row["requiretls"]),
        tls_required_no=bool(row["tls_required_no"]),
        api_metadata=json.loads(row["api_metadata"]) if row["api_metadata"] else None,
    )


def _recipients(c: sqlite3.Connection, message_id: str) -> list[RecipientState]:
    return [
        RecipientState(
            r["address"],
            r["domain"],
            RecipientStatus(r["status"]),
            r["attempts"],
            r["reply"],
            r["enhanced"],
            r["updated_at"],
        )
        for r in c.execute(
            "SELECT * FROM recipients WHERE message_id = ? ORDER BY rowid", (message_id,)
        )
    ]


def _events(
    c: sqlite3.Connection, message_id: str, history: bool, event_kinds: tuple[str, ...]
) -> list[Event]:
    """Every event with `history`, else only those of `event_kinds` (none when empty)."""
    if history:
        rows = c.execute("SELECT * FROM events WHERE message_id = ? ORDER BY id", (message_id,))
    elif event_kinds:
        marks = ",".join("?" * len(event_kinds))
        rows = c.execute(
            f"SELECT * FROM events WHERE message_id = ? AND kind IN ({marks}) ORDER BY id",  # noqa: S608
            (message_id, *event_kinds),
        )
    else:
        return []
    return [Event(e["at"], e["recipient"], e["kind"], json.loads(e["detail"])) for e in rows]


def _attempts(c: sqlite3.Connection, message_id: str) -> list[Attempt]:
    return [
        Attempt(
            a["at"],
            a["domain"],
            a["mx"],
            a["ip"],
            a["route_method"],
            a["tls_version"],
            a["cipher"],
            a["cert_subject"],
            a["cert_fingerprint"],
            AttemptOutcome(a["outcome"]),
            a["reply"],
            a["policy"],
        )
        for a in c.execute("SELECT * FROM attempts WHERE message_id = ? ORDER BY id", (message_id,))
    ]


def _attempt_row(message_id: str, a: DeliveryAttempt, at: float) -> tuple[object, ...]:
    """The attempts table's columns, in the order `_INSERT_ATTEMPT` names them."""
    return (
        message_id,
        a.domain,
        a.mx,
        a.ip,
        a.route_method,
        a.tls_version,
        a.cipher,
        a.cert_subject,
        a.cert_fingerprint,
        a.outcome.value,
        a.reply,
        at,
        a.policy,
    )


_INSERT_ATTEMPT = (
    "INSERT INTO attempts (message_id, domain, mx, ip, route_method, tls_version,"
    " cipher, cert_subject, cert_fingerprint, outcome, reply, at, policy)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class MetadataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts -------------------------------------------------------------------
    async def create_account(
        self, name: str, *, locale: str, notify_address: str | None, store_subject: bool = False
    ) -> Account:
        def op(c: sqlite3.Connection) -> Account:
            if c.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"account {name!r} exists already")
            account = Account(
                "acc_" + secrets.token_hex(6),
                name,
                locale,
                notify_address,
                store_subject,
                time.time(),
            )
            c.execute(
                "INSERT INTO accounts (id, name, locale, notify_address, store_subject, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (account.id, name, locale, notify_address, int(store_subject), account.created_at),
            )
            return account

        return await self.db.run(op)

    async def update_account(self, key: str, **changes: object) -> Account:
        """Change settings of an account: any field of `Account` but its identity
        (`ACCOUNT_SETTINGS`); None values are left alone."""
        sets = {k: v for k, v in changes.items() if v is not None}
        if not set(sets) <= ACCOUNT_SETTINGS:
            raise ValueError(f"unknown account settings: {sorted(set(sets) - ACCOUNT_SETTINGS)}")

        def op(c: sqlite3.Connection) -> sqlite3.Row | None:
            row = c.execute(
                "SELECT id FROM accounts WHERE id = ? OR name = ?", (key, key)
            ).fetchone()
            if row is None:
                return None
            for column, value in sets.items():
                value = int(value) if isinstance(value, bool) else value
                c.execute(f"UPDATE accounts SET {column} = ? WHERE id = ?", (value, row["id"]))  # noqa: S608 - column from the allow-list
            changed: sqlite3.Row | None = c.execute(
                "SELECT * FROM accounts WHERE id = ?", (row["id"],)
            ).fetchone()
            return changed

        row = await self.db.run(op)
        if row is None:
            raise NotFound(f"no account {key!r}")
        return _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self.db.run(
            lambda c: c.execute("SELECT * FROM accounts ORDER BY name").fetchall()
        )
        return [_account(r) for r in rows]

    async def get_account(self, key: str) -> Account:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM accounts WHERE id = ? OR name = ?", (key, key)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no account {key!r}")
        return _account(row)

    # -- domains --------------------------------------------------------------------
    async def add_domain(self, account_id: str, name: str) -> Domain:
        def op(c: sqlite3.Connection) -> Domain:
            row = c.execute("SELECT * FROM domains WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row["account_id"] != account_id:
                    raise ConflictError(f"domain {name} belongs to another account")
                return _domain(row)
            domain = Domain(name, account_id, secrets.token_urlsafe(24), None, time.time())
            c.execute(
                "INSERT INTO domains VALUES (?, ?, ?, ?, ?)",
                (name, account_id, domain.token, None, domain.created_at),
            )
            return domain

        return await self.db.run(op)

    async def get_domain(self, name: str) -> Domain:
        row = await self.db.read(
            lambda c: c.execute("SELECT * FROM domains WHERE name = ?", (name,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no domain {name!r}")
        return _domain(row)

    async def list_domains(self, account_id: str | None = None) -> list[Domain]:
        return [_domain(r) for r in await self._of_account("domains", "name", account_id)]

    async def delete_domain(self, name: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM domains WHERE name = ?", (name,))
            # Its health report and its open DNS alert go with it (nobody is told: the
            # domain is no longer theirs to fix).
            c.execute("DELETE FROM domain_health WHERE domain = ?", (name,))
            c.execute(
                "DELETE FROM account_alerts WHERE kind = 'domain_dns_error' AND about = ?", (name,)
            )

        await self.db.run(op)

    async def mark_domain_verified(self, name: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "UPDATE domains SET verified_at = COALESCE(verified_at, ?) WHERE name = ?",
                (time.time(), name),
            )
        )

    async def verified_domains(self, account_id: str) -> frozenset[str]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT name FROM domains WHERE account_id = ? AND verified_at IS NOT NULL",
                (account_id,),
            ).fetchall()
        )
        return frozenset(r["name"] for r in rows)

    # -- credentials ----------------------------------------------------------------
    async def create_credential(
        self,
        account_id: str,
        kind: str,
        username: str,
        secret_hash: str,
        scopes: tuple[str, ...] = (),
    ) -> Credential:
        cred = Credential(
            "cred_" + secrets.token_hex(6),
            account_id,
            kind,
            username,
            secret_hash,
            time.time(),
            None,
            scopes=scopes,
        )
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO credentials (id, account_id, kind, username, secret_hash, created_at,"
                " revoked_at, scopes) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    cred.id,
                    account_id,
                    kind,
                    username,
                    secret_hash,
                    cred.created_at,
                    " ".join(scopes),
                ),
            )
        )
        return cred

    async def credential_by_username(self, username: str) -> Credential | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM credentials WHERE username = ?", (username,)
            ).fetchone()
        )
        return None if row is None else _credential(row)

    async def list_credentials(self, account_id: str | None = None) -> list[Credential]:
        rows = await self._of_account("credentials", "created_at", account_id)
        return [_credential(r) for r in rows]

    async def _of_account(
        self, table: Literal["domains", "credentials"], order: str, account_id: str | None
    ) -> list[sqlite3.Row]:
        """Every row of `table` (of one account when `account_id` is given), in `order`."""
        where = "" if account_id is None else " WHERE account_id = ?"
        sql = f"SELECT * FROM {table}{where} ORDER BY {order}"  # noqa: S608 - fixed names
        args = () if account_id is None else (account_id,)
        rows: list[sqlite3.Row] = await self.db.run(lambda c: c.execute(sql, args).fetchall())
        return rows

    async def revoke_credential(self, credential_id: str) -> Credential:
        def op(c: sqlite3.Connection) -> sqlite3.Row | None:
            c.execute(
                "UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (time.time(), credential_id),
            )
            revoked: sqlite3.Row | None = c.execute(
                "SELECT * FROM credentials WHERE id = ?", (credential_id,)
            ).fetchone()
            return revoked

        row = await self.db.run(op)
        if row is None:
            raise NotFound(f"no credential {credential_id!r}")
        return _credential(row)

    # -- messages -------------------------------------------------------------------
    @staticmethod
    def insert_message_op(msg: NewMessage, now: float | None = None) -> Op:
        """The accepted message (recipients queued, the `accepted` event), created `now`."""

        def op(c: sqlite3.Connection) -> None:
            created = time.time() if now is None else now
            c.execute(
                "INSERT INTO messages (id, account_id, mail_from, header_from, size,"
                " message_id_header, subject, smtputf8, dsn_of, created_at, requiretls,"
                " tls_required_no, api_metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    msg.id,
                    msg.account_id,
                    msg.mail_from,
                    msg.header_from,
                    msg.size,
                    msg.message_id_header,
                    msg.subject,
                    int(msg.smtputf8),
                    msg.dsn_of,
                    created,
                    int(msg.requiretls),
                    int(msg.tls_required_no),
                    json.dumps(msg.api_metadata) if msg.api_metadata else None,
                ),
            )
            c.executemany(
                "INSERT INTO recipients (message_id, address, domain, status, updated_at)"
                " VALUES (?, ?, ?, 'queued', ?)",
                [(msg.id, r, _domain_of(r), created) for r in msg.recipients],
            )
            detail = {"size": msg.size, "recipients": len(msg.recipients)}
            insert_event(c, event_row(msg.id, None, created, "accepted", detail))
            if msg.scanned is not None:  # scanned during acceptance (scan.inline)
                insert_event(c, event_row(msg.id, None, created, "scanned", {"results": msg.scanned}))

        return op

    @staticmethod
    def accepted_record(msg: NewMessage, now: float) -> MessageRecord:
        """What `message(…, history=False)` reads back right after `insert_message_op(msg,
        now)` committed (its `accepted` event aside), without reading it."""
        return MessageRecord(
            msg.id,
            msg.account_id,
            msg.mail_from,
            msg.header_from,
            msg.size,
            msg.message_id_header,
            msg.subject,
            msg.smtputf8,
            msg.dsn_of,
            now,
            None,
            None,
            requiretls=msg.requiretls,
            tls_required_no=msg.tls_required_no,
            api_metadata=dict(msg.api_metadata) if msg.api_metadata else None,
            recipients=[
                RecipientState(r, _domain_of(r), RecipientStatus.QUEUED, 0, None, None, now)
                for r in msg.recipients
            ],
            events=(
                [Event(now, None, "scanned", {"results": msg.scanned})]
                if msg.scanned is not None
                else []
            ),
        )

    async def message(
        self, message_id: str, *, history: bool = True, event_kinds: tuple[str, ...] = ()
    ) -> MessageRecord:
        """The message with its recipients; with `history` also every event and attempt,
        else only the events of `event_kinds` (stages need little; displays need all)."""

        def op(c: sqlite3.Connection) -> MessageRecord | None:
            record = _message_row(c, message_id)
            if record is None:
                return None
            record.recipients = _recipients(c, message_id)
            record.events = _events(c, message_id, history, event_kinds)
            if history:
                record.attempts = _attempts(c, message_id)
            return record

        record = await self.db.read(op)
        if record is None:
            raise NotFound(f"no message {message_id!r}")
        return record

    @staticmethod
    def event_op(message_id: str, recipient: str | None, kind: str, detail: dict[str, Any]) -> Op:
        """The event, timed now (when it happened, not when its transaction runs)."""
        row = event_row(message_id, recipient, time.time(), kind, detail)
        return lambda c: insert_event(c, row)

    async def record_outcome(
        self,
        message_id: str,
        updates: Iterable[RecipientUpdate],
        attempts: Iterable[DeliveryAttempt] = (),
        events: Iterable[tuple[str | None, str, dict[str, Any]]] = (),
        also: Iterable[Op] = (),
        before: Iterable[Op] = (),
    ) -> None:
        """Store new recipient statuses, the attempts made, further events and the
        caller's `also` writes, in one transaction (after the caller's `before` writes:
        what an earlier stage did and has not written yet)."""
        await self.db.run(self.outcome_op(message_id, updates, attempts, events, also, before))

    @staticmethod
    def outcome_op(
        message_id: str,
        updates: Iterable[RecipientUpdate],
        attempts: Iterable[DeliveryAttempt] = (),
        events: Iterable[tuple[str | None, str, dict[str, Any]]] = (),
        also: Iterable[Op] = (),
        before: Iterable[Op] = (),
    ) -> Op:
        """`record_outcome` as one operation, for the caller's own transaction."""
        updates = list(updates)
        attempts = list(attempts)
        events = list(events)
        also = list(also)
        before = list(before)

        def op(c: sqlite3.Connection) -> None:
            for fn in before:
                fn(c)
            now = time.time()
            for u in updates:
                c.execute(
                    "UPDATE recipients SET status = ?, reply = COALESCE(?, reply),"
                    " enhanced = COALESCE(?, enhanced), attempts = attempts + ?, updated_at = ?"
                    " WHERE message_id = ? AND address = ?",
                    (
                        u.status.value,
                        u.reply,
                        u.enhanced,
                        int(u.count_attempt),
                        now,
                        message_id,
                        u.address,
                    ),
                )
                insert_event(c, event_row(message_id, u.address, now, u.status.value, u.event))
            for recipient, kind, detail in events:
                insert_event(c, event_row(message_id, recipient, now, kind, detail))
            if attempts:
                c.executemany(_INSERT_ATTEMPT, [_attempt_row(message_id, a, now) for a in attempts])
            for fn in also:
                fn(c)

        return op

    @staticmethod
    def finish_message_op(message_id: str) -> Op:
        return lambda c: c.execute(
            "UPDATE messages SET finished_at = COALESCE(finished_at, ?) WHERE id = ?",
            (time.time(), message_id),
        )

    async def list_messages(
        self,
        account_id: str,
        *,
        status: str | None = None,
        recipient: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: str = "",
        limit: int = 50,
    ) -> list[MessageRecord]:
        """An account's messages, newest first (ids sort by time), with their recipients."""

        def op(c: sqlite3.Connection) -> list[str]:
            sql = "SELECT m.id FROM messages m WHERE m.account_id = ? AND m.dsn_of IS NULL"
            args: list[object] = [account_id]
            if before_id:
                sql += " AND m.id < ?"
                args.append(before_id)
            if since is not None:
                sql += " AND m.created_at >= ?"
                args.append(since)
            if until is not None:
                sql += " AND m.created_at < ?"
                args.append(until)
            if status or recipient:
                sql += " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id"
                if status:
                    sql += " AND r.status = ?"
                    args.append(status)
                if recipient:
                    sql += " AND lower(r.address) = ?"
                    args.append(recipient.lower())
                sql += ")"
            sql += " ORDER BY m.id DESC LIMIT ?"
            args.append(limit)
            return [r[0] for r in c.execute(sql, args)]

        return [await self.message(mid) for mid in await self.db.run(op)]

    async def delivery_stats(self) -> DeliveryStats:
        """Counts over the attempt records: (outcome, route) and TLS versions."""

        def op(c: sqlite3.Connection) -> DeliveryStats:
            by_outcome = {
                (AttemptOutcome(r[0]), r[1] or "none"): r[2]
                for r in c.execute(
                    "SELECT outcome, route_method, COUNT(*) FROM attempts GROUP BY 1, 2"
                )
            }
            tls = {
                r[0]: r[1]
                for r in c.execute(
                    "SELECT tls_version, COUNT(*) FROM attempts WHERE tls_version IS NOT NULL GROUP BY 1"
                )
            }
            return {"by_outcome": by_outcome, "tls_versions": tls}

        return await self.db.run(op)

    async def mark_warned(self, message_id: str) -> bool:
        """Set warned_at once; True only for the caller that set it."""
        cur = await self.db.run(
            lambda c: (
                c.execute(
                    "UPDATE messages SET warned_at = ? WHERE id = ? AND warned_at IS NULL",
                    (time.time(), message_id),
                ).rowcount
            )
        )
        return bool(cur)
