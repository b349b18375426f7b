"""GDPR rights of access (Art. 15) and erasure (Art. 17) for one person, by e-mail address.

`PERSONAL_COLUMNS` lists every column that can hold an address: the export reads every
row that names the person there; the erasure removes or pseudonymises each such row in
one transaction. An address counts where it stands on its own (not inside a longer
address: erasing `bob@x.nl` leaves `jimbob@x.nl` alone), case-insensitively (ASCII), also
JSON-escaped inside JSON columns.

What the erasure does per table:
- replaced by the pseudonym `erased:<hmac>` (an HMAC of the address under a key derived
  from the master key, so the same person gets the same pseudonym everywhere and counts
  stay right): messages, recipients, events, attempts, webhook deliveries, account events,
  idempotency records, TLS-report details, and audit-log subjects (the chain stays
  verifiable: it covers a digest of the subject, see `audit_chain`);
- deleted: delivery evidence naming the person as recipient or envelope sender (a signed
  record cannot be pseudonymised without breaking its signature), issued S/MIME
  certificates (the address is in the certificate; a new one is issued on next use) and
  suppressions (they would no longer match anything) and open account alerts about
  the person (a login name that is an address);
- cleared: an account's notify address.
Deleted and overwritten bytes are zeroed (`secure_delete`) and the WAL is checkpointed
afterwards by the caller. A person with a message still in delivery cannot be erased yet
(the address is needed to deliver): the erasure is refused with the count.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from secumail.errors import ConflictError
from secumail.store.audit import AuditLog, derive_key
from secumail.store.audit_chain import ERASED_PREFIX, AuditEntry, AuditKind, subject_digest
from secumail.store.database import Database

PSEUDONYM_KEY_INFO = b"secumail/gdpr-pseudonym/v1"


@dataclass(frozen=True, slots=True)
class PersonalColumns:
    table: str
    searched: tuple[str, ...]  # columns that may hold the address
    exported: tuple[str, ...]  # what the export shows of a matching row (never secrets)
    erase: str  # "replace" | "delete" | "null"


PERSONAL_COLUMNS: tuple[PersonalColumns, ...] = (
    PersonalColumns("accounts", ("notify_address",), ("id", "name", "notify_address"), "null"),
    PersonalColumns(
        "messages",
        ("mail_from", "header_from", "subject", "api_metadata"),
        (
            "id",
            "account_id",
            "mail_from",
            "header_from",
            "subject",
            "size",
            "dsn_of",
            "api_metadata",
            "created_at",
            "finished_at",
        ),
        "replace",
    ),
    PersonalColumns(
        "recipients",
        ("address", "reply"),
        ("message_id", "address", "domain", "status", "attempts", "reply", "enhanced", "updated_at"),
        "replace",
    ),
    PersonalColumns(
        "events",
        ("recipient", "detail"),
        ("message_id", "recipient", "at", "kind", "detail"),
        "replace",
    ),
    PersonalColumns(
        "attempts",
        ("reply",),
        ("message_id", "domain", "mx", "ip", "route_method", "tls_version", "outcome", "reply", "at"),
        "replace",
    ),
    PersonalColumns(
        "evidence", ("recipient",), ("message_id", "recipient", "token", "created_at"), "delete"
    ),
    PersonalColumns(
        "smime_certs", ("address",), ("address", "cert_pem", "not_after", "issued_at"), "delete"
    ),
    PersonalColumns(
        "suppressions",
        ("address",),
        ("account_id", "address", "reason", "origin", "message_id", "created_at"),
        "delete",
    ),
    PersonalColumns(
        "account_events", ("detail",), ("account_id", "kind", "detail", "at"), "replace"
    ),
    PersonalColumns(
        "account_alerts",
        ("about", "detail"),
        ("account_id", "kind", "about", "detail", "raised_at"),
        "delete",
    ),
    PersonalColumns(
        "webhook_deliveries",
        ("payload", "last_error"),
        ("webhook_id", "event_id", "event", "payload", "status", "last_error", "created_at"),
        "replace",
    ),
    PersonalColumns(
        "idempotency", ("response",), ("account_id", "key", "response", "created_at"), "replace"
    ),
    PersonalColumns(
        "tlsrpt_results",
        ("detail",),
        ("day", "policy_domain", "mx_host", "result_type", "detail", "count"),
        "replace",
    ),
    PersonalColumns(
        "audit_log", ("subject",), ("seq", "at", "actor", "kind", "subject", "detail"), "replace"
    ),
)

# Characters that may stand next to an address without being part of it.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]"


def _pattern(address: str) -> re.Pattern[str]:
    needles = {address, json.dumps(address)[1:-1]}
    body = "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
    return re.compile(rf"(?<!{_LOCAL})(?:{body})(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])", re.IGNORECASE)


def _needles(address: str) -> list[str]:
    return sorted({address, json.dumps(address)[1:-1].lower()})


@dataclass(frozen=True, slots=True)
class ErasureReport:
    pseudonym: str
    removed: dict[str, int]  # table -> rows deleted
    pseudonymised: dict[str, int]  # table -> rows changed
    audit: AuditEntry | None = None
    wal_cleared: bool = False  # the old pages left the WAL file too (checkpoint, truncate)


class PersonalData:
    def __init__(self, db: Database, audit: AuditLog, secret: bytes) -> None:
        self.db = db
        self.audit = audit
        self._key = derive_key(secret, PSEUDONYM_KEY_INFO)

    def pseudonym(self, address: str) -> str:
        return ERASED_PREFIX + subject_digest(self._key, address.strip().lower())[:32]

    # -- finding -------------------------------------------------------------------------
    @staticmethod
    def _rows(
        c: sqlite3.Connection, spec: PersonalColumns, address: str
    ) -> list[sqlite3.Row]:
        """The rows of `spec.table` naming `address` in one of its searched columns."""
        pattern = _pattern(address)
        needles = _needles(address)
        where = " OR ".join(
            f"instr(lower({col}), ?) > 0" for col in spec.searched for _ in needles
        )
        args = [n for _col in spec.searched for n in needles]
        rows = c.execute(
            f"SELECT rowid AS _rowid, * FROM {spec.table} WHERE {where}",  # noqa: S608 - names from PERSONAL_COLUMNS
            args,
        ).fetchall()
        return [
            r for r in rows if any(r[col] is not None and pattern.search(str(r[col])) for col in spec.searched)
        ]

    @staticmethod
    def _evidence_as_sender(c: sqlite3.Connection, address: str) -> list[sqlite3.Row]:
        """Evidence of messages the person sent (the signed record names the sender)."""
        return c.execute(
            "SELECT e.rowid AS _rowid, e.* FROM evidence e JOIN messages m ON m.id = e.message_id"
            " WHERE lower(m.mail_from) = ?",
            (address,),
        ).fetchall()

    def _found(self, c: sqlite3.Connection, address: str) -> dict[str, list[sqlite3.Row]]:
        found: dict[str, list[sqlite3.Row]] = {}
        for spec in PERSONAL_COLUMNS:
            rows = self._rows(c, spec, address)
            if spec.table == "evidence":
                have = {r["_rowid"] for r in rows}
                rows += [r for r in self._evidence_as_sender(c, address) if r["_rowid"] not in have]
            found[spec.table] = rows
        return found

    # -- access (Art. 15) ------------------------------------------------------------------
    async def export(self, address: str) -> dict[str, list[dict[str, Any]]]:
        """Every record naming `address`, per table, and the messages sent to it (secrets
        and sealed keys left out)."""
        address = address.strip().lower()

        def op(c: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
            found = self._found(c, address)
            # The messages the person received, too (who wrote to them, when).
            have = {r["id"] for r in found["messages"]}
            received = sorted({r["message_id"] for r in found["recipients"]} - have)
            if received:
                found["messages"] += c.execute(
                    f"SELECT rowid AS _rowid, * FROM messages WHERE id IN ({','.join('?' * len(received))})",  # noqa: S608
                    received,
                ).fetchall()
            out: dict[str, list[dict[str, Any]]] = {}
            for spec in PERSONAL_COLUMNS:
                out[spec.table] = [
                    {col: _plain(row[col]) for col in spec.exported} for row in found[spec.table]
                ]
            return out

        # Whole-table scans: in a thread, so a gateway serving this keeps serving others.
        return await asyncio.to_thread(self.db.read_sync, op)

    # -- erasure (Art. 17) -----------------------------------------------------------------
    def erase_op(self, address: str, actor: str) -> Callable[[sqlite3.Connection], ErasureReport]:
        address = address.strip().lower()
        pseudonym = self.pseudonym(address)
        pattern = _pattern(address)

        def op(c: sqlite3.Connection) -> ErasureReport:
            busy = self._in_delivery(c, address)
            if busy:
                raise ConflictError(
                    f"{busy} message(s) from or to this address are still in delivery; "
                    "erase again once they are finished"
                )
            c.execute("PRAGMA secure_delete=ON")
            try:
                removed, changed = self._erase(c, address, pseudonym, pattern)
                record = self.audit.append_op(
                    actor,
                    AuditKind.GDPR_ERASED,
                    pseudonym,
                    {"removed": removed, "pseudonymised": changed},
                )
                entry = record(c)
            finally:
                c.execute("PRAGMA secure_delete=FAST")
            return ErasureReport(pseudonym, removed, changed, entry)

        return op

    def _in_delivery(self, c: sqlite3.Connection, address: str) -> int:
        pattern = _pattern(address)
        rows = c.execute(
            "SELECT m.id, m.mail_from, r.address FROM messages m"
            " LEFT JOIN recipients r ON r.message_id = m.id"
            " WHERE (m.finished_at IS NULL OR r.status IN ('queued', 'deferred'))"
            " AND (instr(lower(m.mail_from), ?) > 0 OR instr(lower(r.address), ?) > 0)",
            (address, address),
        ).fetchall()
        return len(
            {
                r["id"]
                for r in rows
                if pattern.fullmatch(r["mail_from"] or "") or pattern.fullmatch(r["address"] or "")
            }
        )

    def _erase(
        self, c: sqlite3.Connection, address: str, pseudonym: str, pattern: re.Pattern[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        found = self._found(c, address)
        removed: dict[str, int] = {}
        changed: dict[str, int] = {}
        for spec in PERSONAL_COLUMNS:
            rows = found[spec.table]
            if not rows:
                continue
            if spec.erase == "delete":
                c.executemany(
                    f"DELETE FROM {spec.table} WHERE rowid = ?",  # noqa: S608
                    [(r["_rowid"],) for r in rows],
                )
                removed[spec.table] = len(rows)
                continue
            for row in rows:
                sets: dict[str, Any] = {}
                for col in spec.searched:
                    value = row[col]
                    if value is None or not pattern.search(str(value)):
                        continue
                    if spec.erase == "null":
                        sets[col] = None
                    elif spec.table == "audit_log":
                        sets[col] = pseudonym  # the whole subject: the trigger allows only this
                    else:
                        sets[col] = pattern.sub(pseudonym, str(value))
                if not sets:
                    continue
                assignments = ", ".join(f"{col} = ?" for col in sets)
                c.execute(
                    f"UPDATE {spec.table} SET {assignments} WHERE rowid = ?",  # noqa: S608
                    [*sets.values(), row["_rowid"]],
                )
            changed[spec.table] = len(rows)
        return removed, changed

    async def erase(self, address: str, actor: str) -> ErasureReport:
        """Erase the person in one transaction, record it in the audit log, then fold the
        WAL into the database so the old pages leave the log file too."""
        # One transaction of whole-table scans: committed from a thread (`run_sync`), so the
        # event loop of a gateway serving this is not stopped meanwhile.
        report = await asyncio.to_thread(self.db.run_sync, self.erase_op(address, actor))
        if report.audit is not None:
            self.audit.anchored(report.audit)
        cleared = await self.db.checkpoint()
        return ErasureReport(
            report.pseudonym, report.removed, report.pseudonymised, report.audit, cleared
        )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return None  # sealed material is never exported
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
