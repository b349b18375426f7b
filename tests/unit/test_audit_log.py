"""The audit log: a hash chain over every entry, whose tampering `verify` points at."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest

from secumail.store.audit import AuditLog
from secumail.store.audit_chain import AuditKind, check_chain
from secumail.store.database import Database

SECRET = b"k" * 32


def filled(db: Database, n: int = 5) -> AuditLog:
    log = AuditLog(db, SECRET)

    async def main() -> None:
        for i in range(n):
            await log.record("cli:root", AuditKind.ACCOUNT_CREATED, f"acc_{i}", {"name": f"A{i}"})

    asyncio.run(main())
    return log


def tamper(db: Database, sql: str, args: tuple = ()) -> None:
    """What someone with write access to the file does: triggers off, then the change."""
    conn = sqlite3.connect(db.path)
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DROP TRIGGER audit_log_only_erase")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_entries_chain_and_verify(gateway_db: Database) -> None:
    log = filled(gateway_db)
    entries = asyncio.run(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    report = asyncio.run(log.verify())
    assert report.intact and report.entries == 5
    assert (report.head_seq, report.head_hash) == (5, entries[-1].hash)


@pytest.mark.parametrize(
    ("sql", "seq", "why"),
    [
        ("UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 3", 3, "altered"),
        ("UPDATE audit_log SET detail = '{\"name\": \"B\"}' WHERE seq = 2", 2, "altered"),
        ("UPDATE audit_log SET subject = 'acc_other' WHERE seq = 4", 4, "subject"),
        ("UPDATE audit_log SET kind = 'account_updated' WHERE seq = 1", 1, "altered"),
        ("DELETE FROM audit_log WHERE seq = 3", 3, "missing"),
        ("DELETE FROM audit_log WHERE seq = 1", 1, "missing"),
        # Not announced by any erasure: a forged pseudonym hides what the entry was about.
        ("UPDATE audit_log SET subject = 'erased:0123' WHERE seq = 2", 2, "pseudonymised"),
    ],
)
def test_tampering_is_found_at_its_entry(gateway_db: Database, sql: str, seq: int, why: str) -> None:
    log = filled(gateway_db)
    tamper(gateway_db, sql)
    report = asyncio.run(log.verify())
    assert not report.intact
    assert report.broken_seq == seq
    assert why in (report.reason or "")


def test_a_rewritten_chain_does_not_match_its_keyed_subject_digests(gateway_db: Database) -> None:
    """Recomputing every hash after a change is possible without a key, but a changed
    subject's digest is an HMAC under a key outside the database."""
    log = filled(gateway_db, 3)
    tamper(gateway_db, "UPDATE audit_log SET subject = 'acc_x' WHERE seq = 2")
    entries = asyncio.run(log.entries())
    assert check_chain(entries, b"another key").broken_seq == 1
    assert asyncio.run(log.verify()).broken_seq == 2


def test_deleting_the_newest_entries_is_caught_by_the_anchor(gateway_db: Database) -> None:
    log = filled(gateway_db)
    tamper(gateway_db, "DELETE FROM audit_log WHERE seq >= 4")
    report = asyncio.run(log.verify())
    assert report.broken_seq == 4
    assert "deleted" in (report.reason or "")


def test_a_noted_head_must_still_be_in_the_chain(gateway_db: Database) -> None:
    log = filled(gateway_db, 3)
    head = asyncio.run(log.entries())[-1]
    assert asyncio.run(log.verify((head.seq, head.hash))).intact
    assert asyncio.run(log.verify((head.seq, "f" * 64))).broken_seq == head.seq
    log.anchor.path.unlink()  # the anchor file went too: the noted head still tells
    tamper(gateway_db, "DELETE FROM audit_log WHERE seq = 3")
    assert asyncio.run(log.verify((head.seq, head.hash))).broken_seq == 3


def test_a_missing_or_garbled_anchor_is_reported(gateway_db: Database) -> None:
    log = filled(gateway_db, 3)
    assert asyncio.run(log.verify()).intact
    log.anchor.path.write_text("garbage\n")
    report = asyncio.run(log.verify())
    assert report.broken_seq == 3 and "unreadable" in (report.reason or "")
    log.anchor.path.unlink()
    tamper(gateway_db, "DELETE FROM audit_log WHERE seq = 3")
    report = asyncio.run(log.verify())
    assert report.broken_seq == 2 and "missing" in (report.reason or "")


def test_the_table_refuses_deletes_and_changes(gateway_db: Database) -> None:
    filled(gateway_db, 2)
    for sql in (
        "DELETE FROM audit_log WHERE seq = 1",
        "UPDATE audit_log SET actor = 'x' WHERE seq = 1",
        "UPDATE audit_log SET subject = 'other' WHERE seq = 1",
    ):
        with pytest.raises(Exception, match="append-only"):
            gateway_db.run_sync(lambda c, sql=sql: c.execute(sql))


def test_a_detail_never_holds_an_address(gateway_db: Database) -> None:
    log = AuditLog(gateway_db, SECRET)
    with pytest.raises(ValueError, match="addresses"):
        log.append_op("cli:root", AuditKind.GDPR_EXPORTED, "x", {"who": "a@b.nl"})


def test_appends_from_one_batch_stay_in_one_chain(gateway_db: Database) -> None:
    log = AuditLog(gateway_db, SECRET)

    async def main() -> None:
        await asyncio.gather(
            *(log.record("smtp:192.0.2.1", AuditKind.LOGIN_REFUSED, f"u{i}") for i in range(20))
        )

    asyncio.run(main())
    report = asyncio.run(log.verify())
    assert report.intact and report.entries == 20


def test_listing_filters_by_kind_and_keeps_the_newest(gateway_db: Database) -> None:
    log = filled(gateway_db, 3)
    asyncio.run(log.record("smtp:192.0.2.1", AuditKind.LOGIN_REFUSED, "someone"))
    assert [e.seq for e in asyncio.run(log.entries(limit=2))] == [3, 4]
    refused = asyncio.run(log.entries(kinds=("login_refused",)))
    assert [(e.seq, e.actor) for e in refused] == [(4, "smtp:192.0.2.1")]
