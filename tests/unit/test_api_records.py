"""What the API keeps beside messages: the answer to an Idempotency-Key, and account events
for the account's webhooks."""

from __future__ import annotations

import asyncio

from secumail.store.account_events import AccountEventLog
from secumail.store.database import Database
from secumail.store.idempotency import IdempotencyStore
from secumail.store.metadata import MetadataStore
from secumail.store.webhooks import WebhookStore


def account(db: Database, name: str = "Clinic") -> str:
    return asyncio.run(MetadataStore(db).create_account(name, locale="en", notify_address=None)).id


def test_the_first_answer_to_a_key_is_kept(gateway_db: Database) -> None:
    acc = account(gateway_db)
    store = IdempotencyStore(gateway_db)
    assert asyncio.run(store.find(acc, "k1")) is None
    asyncio.run(store.remember(acc, "k1", "hash-a", 202, {"id": "m_1"}))
    asyncio.run(store.remember(acc, "k1", "hash-b", 202, {"id": "m_2"}))
    assert asyncio.run(store.find(acc, "k1")) == ("hash-a", 202, {"id": "m_1"})


def test_a_key_belongs_to_its_account(gateway_db: Database) -> None:
    acc, other = account(gateway_db), account(gateway_db, "Other clinic")
    store = IdempotencyStore(gateway_db)
    asyncio.run(store.remember(acc, "k1", "hash-a", 202, {"id": "m_1"}))
    assert asyncio.run(store.find(other, "k1")) is None


def test_an_account_event_reaches_the_webhook_feed(gateway_db: Database) -> None:
    acc = account(gateway_db)
    detail = {"domain": "clinic.test", "missing": ["TXT"]}
    asyncio.run(AccountEventLog(gateway_db).record(acc, "domain_dns_error", detail))
    _messages, events = asyncio.run(WebhookStore(gateway_db).new_events(0, 0))
    assert [(e["account_id"], e["kind"]) for e in events] == [(acc, "domain_dns_error")]
