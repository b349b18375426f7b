"""The audit log: an append-only, hash-chained table of administrative and security
events (who did what to which subject, when), and its anchor.

Entries are appended inside a write transaction (`append_op`), so the chain is extended
by one writer at a time, also across processes sharing the file. Nothing in Secumail
updates or deletes an entry; triggers refuse it, except the one change a GDPR erasure
makes (a subject replaced by its `erased:` pseudonym, see `audit_chain`).

The anchor is a small file next to the database holding the newest sequence number and
hash this installation has written (advanced under a file lock, never moved back).
`verify` checks the chain still holds it, so deleting the newest entries — which leaves a
perfectly consistent shorter chain — is noticed. Someone who can rewrite both the
database and the anchor file is not caught by it: operators note the printed head hash
elsewhere (`audit verify --head SEQ:HASH` checks against it).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secumail.store.audit_chain import (
    GENESIS,
    AuditEntry,
    AuditKind,
    ChainReport,
    check_chain,
    new_entry,
)
from secumail.store.database import Database

log = logging.getLogger("secumail.audit")

SUBJECT_KEY_INFO = b"secumail/audit-subject-digest/v1"


def derive_key(secret: bytes, info: bytes) -> bytes:
    """A key for one purpose, derived from the installation's master secret."""
    return hmac.new(secret, info, hashlib.sha256).digest()


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        row["seq"],
        row["at"],
        row["actor"],
        row["kind"],
        row["subject"],
        row["subject_digest"],
        json.loads(row["detail"]),
        row["prev_hash"],
        row["hash"],
    )


class AuditAnchor:
    """`<db>.audit-head`: "SEQ HASH" of the newest entry written, only ever advanced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[int, str] | None:
        try:
            text = self.path.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the audit anchor %s: %s", self.path, exc)
            return None
        if len(text) != 2 or not text[0].isdigit():
            return (0, "")  # present but unreadable: verify reports it
        return int(text[0]), text[1]

    def advance(self, seq: int, value: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot write the audit anchor %s: %s", self.path, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.read(fd, 200).split()
            if current and current[0].isdigit() and int(current[0]) >= seq:
                return
            data = f"{seq} {value}\n".encode("ascii")
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock


class AuditLog:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self._key = derive_key(secret, SUBJECT_KEY_INFO)
        self.anchor = AuditAnchor(db.path.with_name(db.path.name + ".audit-head"))

    # -- writing -----------------------------------------------------------------------
    def append_op(
        self, actor: str, kind: AuditKind, subject: str, detail: dict[str, Any] | None = None
    ) -> Callable[[sqlite3.Connection], AuditEntry]:
        """The entry, appended to the chain inside the caller's transaction (timed now).
        Call `anchored(entry)` once that transaction committed."""
        at = time.time()
        detail = dict(detail or {})
        new_entry(self._key, 1, at, actor, kind, subject, detail, GENESIS)  # fail early

        def op(c: sqlite3.Connection) -> AuditEntry:
            row = c.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            entry = new_entry(self._key, seq, at, actor, kind, subject, detail, prev)
            c.execute(
                "INSERT INTO audit_log (seq, at, actor, kind, subject, subject_digest, detail,"
                " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.seq,
                    entry.at,
                    entry.actor,
                    entry.kind,
                    entry.subject,
                    entry.subject_digest,
                    json.dumps(entry.detail, sort_keys=True),
                    entry.prev_hash,
                    entry.hash,
                ),
            )
            return entry

        return op

    def anchored(self, entry: AuditEntry) -> AuditEntry:
        self.anchor.advance(entry.seq, entry.hash)
        return entry

    async def record(
        self, actor: str, kind: AuditKind, subject: str, detail: dict[str, Any] | None = None
    ) -> AuditEntry:
        """Append one entry in a transaction of its own (durable on return)."""
        return self.anchored(await self.db.run(self.append_op(actor, kind, subject, detail)))

    # -- reading -----------------------------------------------------------------------
    async def entries(
        self,
        *,
        since: float | None = None,
        kinds: tuple[str, ...] = (),
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries in sequence order; with `limit`, the newest `limit` of them."""
        sql = "SELECT * FROM audit_log WHERE seq > ?"
        args: list[Any] = [after_seq]
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self.db.read(lambda c: c.execute(sql, args).fetchall())
        return [_entry(r) for r in reversed(rows)]

    async def verify(self, head: tuple[int, str] | None = None) -> ChainReport:
        """Walk the whole chain; it must hold the anchor file's head and `head`, if given."""
        anchored = self.anchor.read()
        anchors = [a for a in (anchored, head) if a is not None]

        def op(c: sqlite3.Connection) -> ChainReport:
            rows = (_entry(r) for r in c.execute("SELECT * FROM audit_log ORDER BY seq"))
            return check_chain(rows, self._key, anchors)

        report = await self.db.read(op)
        if report.intact and report.entries and anchored in (None, (0, "")):
            # Entries exist, so the anchor was written: gone or garbled, it was touched, and
            # the deletion of the newest entries can no longer be ruled out.
            state = "missing" if anchored is None else "unreadable"
            return dataclasses.replace(
                report,
                broken_seq=report.head_seq,
                reason=f"the anchor file {self.anchor.path.name} is {state}: entries after "
                f"{report.head_seq} may have been deleted (compare with a noted head)",
            )
        return report
