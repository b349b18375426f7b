"""GDPR access and erasure: every table that can name a person is found, and after the
erasure the address is nowhere in the database file — while the audit chain still holds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from secumail.errors import ConflictError
from secumail.mail.status import RecipientStatus
from secumail.store.account_alerts import AccountAlertStore
from secumail.store.audit import AuditLog
from secumail.store.audit_chain import AuditKind
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.personal_data import PERSONAL_COLUMNS, PersonalData
from secumail.store.records import AttemptOutcome, DeliveryAttempt, NewMessage, RecipientUpdate
from secumail.store.signing import SigningStore
from secumail.store.suppressions import SuppressionStore

SECRET = b"s" * 32
PERSON = "bob@clinic.test"


def finished(c: sqlite3.Connection, mid: str) -> None:
    c.execute("UPDATE messages SET finished_at = ? WHERE id = ?", (time.time(), mid))


def populate(db: Database, person: str = PERSON, *, in_flight: bool = False) -> str:
    """The person in every table that can hold an address; returns the account id."""
    store = MetadataStore(db)
    acc = asyncio.run(store.create_account("Clinic", locale="en", notify_address=person)).id
    to_person = NewMessage("m_to", acc, "alice@hospital.test", [person, "carol@clinic.test"], 10)
    from_person = NewMessage(
        "m_from", acc, person, ["alice@hospital.test"], 10, header_from=person.title()
    )

    def op(c: sqlite3.Connection) -> None:
        store.insert_message_op(to_person)(c)
        store.insert_message_op(from_person)(c)
        status = RecipientStatus.QUEUED if in_flight else RecipientStatus.DELIVERED
        store.outcome_op(
            "m_to",
            [RecipientUpdate(person, status, reply=f"250 2.1.5 <{person}> ok")],
            attempts=[
                DeliveryAttempt(
                    "clinic.test", "mx.clinic.test", AttemptOutcome.TRANSACTION, f"250 ok {person}"
                )
            ],
        )(c)
        store.outcome_op("m_from", [RecipientUpdate("alice@hospital.test", RecipientStatus.DELIVERED)])(c)
        SigningStore.put_evidence_op("m_to", person, "jws-to", "kid")(c)
        SigningStore.put_evidence_op("m_from", "alice@hospital.test", "jws-from", "kid")(c)
        if not in_flight:
            finished(c, "m_to")
        finished(c, "m_from")
        SuppressionStore.add_op(acc, person, "bounced", "bounce", "m_to")(c)
        # An open alert about a credential whose login name is the person's address.
        AccountAlertStore.raise_op(acc, "auth_failures", person, {"username": person}, 0)(c)
        c.execute(
            "INSERT INTO smime_certs VALUES (?, 'PEM', 'CHAIN', x'00', 0, 0)", (person,)
        )
        c.execute(
            "INSERT INTO webhooks VALUES ('wh_1', ?, 'https://hook.test/', '[]', 'secret', 0)", (acc,)
        )
        c.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event, payload, status, next_at,"
            " created_at) VALUES ('wh_1', 'e1', 'delivered', ?, 'delivered', 0, 0)",
            (json.dumps({"recipient": person}),),
        )
        c.execute(
            "INSERT INTO idempotency VALUES (?, 'k1', 'h', 202, ?, 0)",
            (acc, json.dumps({"recipients": [{"address": person}]})),
        )
        # A TLS-report failure detail quoting a remote reply that names the recipient.
        c.execute(
            "INSERT INTO tlsrpt_results VALUES ('2026-12-01', 'clinic.test', 'sts', '', 'mx.clinic.test',"
            " '192.0.2.1', 'validation-failure', ?, 1)",
            (json.dumps({"failure-reason-code": f"550 <{person}> refused"}),),
        )

    db.run_sync(op)
    audit = AuditLog(db, SECRET)
    asyncio.run(audit.record("cli:root", AuditKind.EVIDENCE_EXPORTED, person, {"message": "m_to"}))
    return acc


def raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return data.lower()


def test_export_finds_the_person_in_every_table(gateway_db: Database) -> None:
    populate(gateway_db)
    pd = PersonalData(gateway_db, AuditLog(gateway_db, SECRET), SECRET)
    found = asyncio.run(pd.export(PERSON.upper()))
    assert [t for t, rows in found.items() if not rows] == []
    assert {r["id"] for r in found["messages"]} == {"m_to", "m_from"}
    assert [r["address"] for r in found["recipients"]] == [PERSON]
    # Evidence the person received, and evidence of the message they sent.
    assert {r["message_id"] for r in found["evidence"]} == {"m_to", "m_from"}
    assert found["accounts"][0]["notify_address"] == PERSON
    assert found["audit_log"][0]["kind"] == "evidence_exported"
    assert "sealed_key" not in found["smime_certs"][0]
    assert {spec.table for spec in PERSONAL_COLUMNS} == set(found)


def test_erase_leaves_no_trace_in_the_file_and_the_chain_verifies(gateway_db: Database) -> None:
    populate(gateway_db)
    audit = AuditLog(gateway_db, SECRET)
    pd = PersonalData(gateway_db, audit, SECRET)
    assert PERSON.encode() in raw_bytes(gateway_db.path)
    report = asyncio.run(pd.erase(PERSON, "cli:root"))
    assert PERSON.encode() not in raw_bytes(gateway_db.path)
    assert report.removed == {
        "evidence": 2, "smime_certs": 1, "suppressions": 1, "account_alerts": 1
    }
    assert report.pseudonymised["recipients"] == 1 and report.pseudonymised["audit_log"] == 1
    # Nothing is found any more; the pseudonym stands where the address stood.
    found = asyncio.run(pd.export(PERSON))
    assert not any(found.values())
    msg = asyncio.run(MetadataStore(gateway_db).message("m_to"))
    assert [r.address for r in msg.recipients] == [report.pseudonym, "carol@clinic.test"]
    assert asyncio.run(MetadataStore(gateway_db).get_account("Clinic")).notify_address is None
    check = asyncio.run(audit.verify())
    assert check.intact and check.erased == 1
    last = asyncio.run(audit.entries())[-1]
    assert (last.kind, last.subject) == ("gdpr_erased", report.pseudonym)


def test_erase_leaves_a_longer_address_containing_it_alone(gateway_db: Database) -> None:
    populate(gateway_db, "jimbob@clinic.test")
    pd = PersonalData(gateway_db, AuditLog(gateway_db, SECRET), SECRET)
    assert not any(asyncio.run(pd.export(PERSON)).values())
    report = asyncio.run(pd.erase(PERSON, "cli:root"))
    assert report.removed == {} and report.pseudonymised == {}
    assert asyncio.run(pd.export("jimbob@clinic.test"))["recipients"]


def test_erase_is_refused_while_a_message_is_in_delivery(gateway_db: Database) -> None:
    populate(gateway_db, in_flight=True)
    pd = PersonalData(gateway_db, AuditLog(gateway_db, SECRET), SECRET)
    with pytest.raises(ConflictError, match="still in delivery"):
        asyncio.run(pd.erase(PERSON, "cli:root"))
    assert asyncio.run(pd.export(PERSON))["recipients"]


def test_the_pseudonym_is_stable_and_keyed() -> None:
    a = PersonalData.__new__(PersonalData)
    b = PersonalData.__new__(PersonalData)
    PersonalData.__init__(a, None, None, SECRET)  # type: ignore[arg-type]
    PersonalData.__init__(b, None, None, b"other" * 8)  # type: ignore[arg-type]
    assert a.pseudonym(PERSON) == a.pseudonym(" Bob@Clinic.TEST ")
    assert a.pseudonym(PERSON).startswith("erased:")
    assert a.pseudonym(PERSON) != b.pseudonym(PERSON)
