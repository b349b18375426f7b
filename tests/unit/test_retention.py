"""GDPR storage limitation: finished messages' metadata goes after its account's period;
a message still in delivery stays, however old."""

from __future__ import annotations

import asyncio
import time

from secumail.mail.status import RecipientStatus
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage, RecipientUpdate
from secumail.store.retention import MetadataRetention
from secumail.store.signing import SigningStore

DAY = 86400.0
NOW = time.time()


def message(
    db: Database,
    mid: str,
    account: str | None,
    *,
    age_days: float,
    status: RecipientStatus = RecipientStatus.DELIVERED,
    finished: bool = True,
) -> None:
    created = NOW - age_days * DAY
    msg = NewMessage(mid, account, "alice@hospital.test", ["bob@clinic.test"], 100)
    store = MetadataStore

    def op(c) -> None:
        store.insert_message_op(msg, created)(c)
        store.outcome_op(mid, [RecipientUpdate("bob@clinic.test", status)])(c)
        SigningStore.put_evidence_op(mid, "bob@clinic.test", "token", "kid")(c)
        if finished:
            c.execute("UPDATE messages SET finished_at = ? WHERE id = ?", (created, mid))

    db.run_sync(op)


def remaining(db: Database) -> dict[str, list[str]]:
    def op(c) -> dict[str, list[str]]:
        return {
            t: [r[0] for r in c.execute(f"SELECT DISTINCT message_id FROM {t} ORDER BY 1")]  # noqa: S608
            for t in ("recipients", "events", "evidence")
        } | {"messages": [r[0] for r in c.execute("SELECT id FROM messages ORDER BY id")]}

    return db.run_sync(op)


def account(db: Database, name: str, retention_days: int | None) -> str:
    store = MetadataStore(db)

    async def main() -> str:
        acc = await store.create_account(name, locale="en", notify_address=None)
        if retention_days is not None:
            await store.update_account(acc.id, retention_days=retention_days)
        return acc.id

    return asyncio.run(main())


def test_only_finished_messages_older_than_the_default_go(gateway_db: Database) -> None:
    acc = account(gateway_db, "A", None)
    message(gateway_db, "m_old", acc, age_days=31)
    message(gateway_db, "m_new", acc, age_days=29)
    message(gateway_db, "m_old_queued", acc, age_days=40, status=RecipientStatus.QUEUED, finished=False)
    message(gateway_db, "m_old_deferred", acc, age_days=40, status=RecipientStatus.DEFERRED, finished=False)
    report = asyncio.run(MetadataRetention(gateway_db, 30).purge(NOW))
    assert report.messages == 1 and report.by_account == {acc: 1}
    left = remaining(gateway_db)
    assert left["messages"] == ["m_new", "m_old_deferred", "m_old_queued"]
    # Recipients, events and the signed evidence went with their message.
    for table in ("recipients", "events", "evidence"):
        assert "m_old" not in left[table]
        assert "m_new" in left[table]


def test_an_accounts_own_period_applies(gateway_db: Database) -> None:
    short = account(gateway_db, "Short", 7)
    long = account(gateway_db, "Long", 365)
    message(gateway_db, "m_short", short, age_days=8)
    message(gateway_db, "m_long", long, age_days=100)
    message(gateway_db, "m_notice", None, age_days=31)  # a notice (no account): the default
    asyncio.run(MetadataRetention(gateway_db, 30).purge(NOW))
    assert remaining(gateway_db)["messages"] == ["m_long"]


def test_a_finished_message_with_a_recipient_still_deferred_stays(gateway_db: Database) -> None:
    """finished_at is set only when every recipient is final; should the two ever
    disagree, the recipient's status wins: nothing in delivery is purged."""
    message(gateway_db, "m", None, age_days=90, status=RecipientStatus.DEFERRED)
    assert asyncio.run(MetadataRetention(gateway_db, 30).purge(NOW)).messages == 0
    assert remaining(gateway_db)["messages"] == ["m"]


def test_old_account_events_go_too(gateway_db: Database) -> None:
    acc = account(gateway_db, "A", None)
    gateway_db.run_sync(
        lambda c: c.executemany(
            "INSERT INTO account_events (account_id, kind, detail, at) VALUES (?, 'suppressed', '{}', ?)",
            [(acc, NOW - 40 * DAY), (acc, NOW - DAY)],
        )
    )
    report = asyncio.run(MetadataRetention(gateway_db, 30).purge(NOW))
    assert report.account_events == 1
    assert gateway_db.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM account_events").fetchone()[0]) == 1


def test_tls_reports_received_go_after_the_default_period(gateway_db: Database) -> None:
    """Anyone may send the gateway TLS reports (RFC 8460): kept for the gateway's
    retention period, then purged like the rest of the metadata."""
    from secumail.store.tls_reports_received import TlsReportsReceived
    from tests.unit.test_tlsrpt_intake import a_report

    store = TlsReportsReceived(gateway_db)
    assert asyncio.run(store.add(a_report("old"), received_at=NOW - 40 * DAY)) == "kept"
    assert asyncio.run(store.add(a_report("new"), received_at=NOW - DAY)) == "kept"
    report = asyncio.run(MetadataRetention(gateway_db, 30).purge(NOW))
    assert report.tls_reports_received == 1 and report.as_detail()["tls_reports_received"] == 1
    left = gateway_db.run_sync(lambda c: c.execute("SELECT report_id FROM tlsrpt_received").fetchall())
    assert [r[0] for r in left] == ["new"]
