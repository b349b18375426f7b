"""Delivery attempts as typed records: what the deliver stage writes (`DeliveryAttempt`)
is what `secumail message show`, the API and the metrics read back (`Attempt`, its
outcome one of a closed set, spelt as it always was)."""

from __future__ import annotations

import asyncio

import pytest

from secumail.mail.status import RecipientStatus
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.records import AttemptOutcome, DeliveryAttempt, NewMessage, RecipientUpdate

TRIED = DeliveryAttempt(
    "clinic.test",
    "mx1.clinic.test",
    AttemptOutcome.TRANSACTION,
    "250 2.0.0 queued as 1A2B",
    ip="192.0.2.25",
    route_method="mta-sts",
    policy="mta-sts id=20261201",
    tls_version="TLSv1.3",
    cipher="TLS_AES_256_GCM_SHA384",
    cert_subject="CN=mx1.clinic.test",
    cert_fingerprint="ab" * 32,
)
RULED_OUT = DeliveryAttempt(
    "clinic.test",
    "mx2.clinic.test",
    AttemptOutcome.REJECTED,
    "mx2.clinic.test does not match the MTA-STS policy",
)


def _stored(db: Database, *attempts: DeliveryAttempt) -> MetadataStore:
    store = MetadataStore(db)
    msg = NewMessage("M1", None, "a@hospital.test", ["b@clinic.test"], 10)

    async def main() -> None:
        await db.run(store.insert_message_op(msg))
        update = RecipientUpdate("b@clinic.test", RecipientStatus.DELIVERED, "250 ok", "2.0.0")
        await store.record_outcome("M1", [update], attempts=attempts)

    asyncio.run(main())
    return store


def test_the_stored_outcomes_are_the_five_words_shown_since_the_start() -> None:
    # Stored rows, API output and metric labels use these strings: renaming one breaks
    # every message already recorded and every dashboard that filters on it.
    assert [o.value for o in AttemptOutcome] == [
        "transaction",
        "refused",
        "insecure",
        "unreachable",
        "rejected",
    ]
    assert f"{AttemptOutcome.INSECURE}" == "insecure" == str(AttemptOutcome.INSECURE)


def test_an_attempt_reads_back_as_it_was_written(gateway_db: Database) -> None:
    store = _stored(gateway_db, RULED_OUT, TRIED)
    shown = asyncio.run(store.message("M1")).attempts
    assert [(a.mx, a.outcome) for a in shown] == [
        ("mx2.clinic.test", AttemptOutcome.REJECTED),
        ("mx1.clinic.test", AttemptOutcome.TRANSACTION),
    ], "in the order they were made"
    ruled_out, tried = shown
    assert (ruled_out.ip, ruled_out.route_method, ruled_out.tls_version) == (None, None, None)
    assert ruled_out.reply == RULED_OUT.reply
    assert (
        tried.domain,
        tried.ip,
        tried.route_method,
        tried.policy,
        tried.tls_version,
        tried.cipher,
        tried.cert_subject,
        tried.cert_fingerprint,
        tried.reply,
    ) == (
        TRIED.domain,
        TRIED.ip,
        TRIED.route_method,
        TRIED.policy,
        TRIED.tls_version,
        TRIED.cipher,
        TRIED.cert_subject,
        TRIED.cert_fingerprint,
        TRIED.reply,
    )
    raw = gateway_db.read_sync(
        lambda c: [r[0] for r in c.execute("SELECT outcome FROM attempts ORDER BY id")]
    )
    assert raw == ["rejected", "transaction"]
    assert all(type(o) is str for o in raw)


def test_attempts_belong_to_the_history_only(gateway_db: Database) -> None:
    """Stages read a message without its history: no attempts, only the events asked for."""
    store = _stored(gateway_db, TRIED)
    asyncio.run(gateway_db.run(store.event_op("M1", None, "signed", {"dkim": ["d"]})))
    lean = asyncio.run(store.message("M1", history=False, event_kinds=("signed",)))
    assert lean.attempts == []
    assert [e.kind for e in lean.events] == ["signed"]
    assert asyncio.run(store.message("M1", history=False)).events == []
    full = asyncio.run(store.message("M1"))
    assert [e.kind for e in full.events] == ["accepted", "delivered", "signed"]
    assert [r.address for r in full.recipients] == ["b@clinic.test"]
    assert full.recipients[0].status is RecipientStatus.DELIVERED


def test_delivery_counts_are_keyed_by_outcome_and_route(gateway_db: Database) -> None:
    store = _stored(gateway_db, RULED_OUT, TRIED, TRIED)
    stats = asyncio.run(store.delivery_stats())
    assert stats["by_outcome"] == {
        (AttemptOutcome.REJECTED, "none"): 1,
        (AttemptOutcome.TRANSACTION, "mta-sts"): 2,
    }
    assert stats["tls_versions"] == {"TLSv1.3": 2}


def test_an_outcome_outside_the_closed_set_is_refused() -> None:
    with pytest.raises(ValueError, match="delivered"):
        AttemptOutcome("delivered")
