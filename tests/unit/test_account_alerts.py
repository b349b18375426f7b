"""Account alerts (pipeline/account_alerts.py): told once when a problem appears and once
when it is gone, by an account event (the webhook) and a mail to the notify address in the
account's language — on a real database, with the real intake (the mail is queued as a
message with a null sender)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os

from secumail.mail.alert_mail import AlertText
from secumail.pipeline.account_alerts import AccountAlerts, AlertKind
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.intake import Intake
from secumail.spool.body_store import BodyStore
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore

TEXTS = {
    "en": AlertText("DKIM record of hospital.test missing", "The record is gone.\nPublish it again."),
    "nl": AlertText("DKIM-record van hospital.test ontbreekt", "Het record is weg.\nPubliceer het opnieuw."),
}
FIXED = {"en": AlertText("hospital.test fixed", "All good."), "nl": AlertText("hospital.test hersteld", "In orde.")}


class Parts:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.store = MetadataStore(db)
        self.bodies = BodyStore(db, os.urandom(32))
        self.bus = EmbeddedBus(db, bound=100, lease=60.0)
        self.intake = Intake(self.store, self.bodies, self.bus, "route")
        self.alerts = AccountAlerts(db, self.store, self.intake, hostname="relay.gw.test")

    async def events(self) -> list[tuple[str, str, str]]:
        import json

        rows = await self.db.read(
            lambda c: c.execute("SELECT kind, detail FROM account_events ORDER BY id").fetchall()
        )
        return [(r[0], json.loads(r[1])["state"], json.loads(r[1])["about"]) for r in rows]

    async def mails(self) -> list[bytes]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT id, mail_from FROM messages ORDER BY rowid").fetchall()
        )
        assert all(r[1] == "" for r in rows)  # null sender: no bounce loops
        return [await self.bodies.get(r[0]) for r in rows]


def test_told_once_and_once_more_when_resolved(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account = await p.store.create_account("H", locale="nl", notify_address="it@hospital.test")
        raised = [
            await p.alerts.raise_alert(account.id, AlertKind.DOMAIN_DNS, "hospital.test", {"x": 1}, TEXTS)
            for _ in range(3)
        ]
        assert raised == [True, False, False]
        assert [a.about for a in await p.alerts.open(account.id)] == ["hospital.test"]
        resolved = [
            await p.alerts.resolve(account.id, AlertKind.DOMAIN_DNS, "hospital.test", {}, FIXED)
            for _ in range(2)
        ]
        assert resolved == [True, False]
        assert await p.alerts.open(account.id) == []
        assert await p.events() == [
            ("domain_dns_error", "raised", "hospital.test"),
            ("domain_dns_error", "resolved", "hospital.test"),
        ]
        mails = await p.mails()
        assert len(mails) == 2
        first = email.message_from_bytes(mails[0], policy=email.policy.default)
        assert first["To"].addresses[0].addr_spec == "it@hospital.test"
        assert first["Subject"] == "DKIM-record van hospital.test ontbreekt"  # the account's language
        assert first["Auto-Submitted"] == "auto-generated"
        assert "Publiceer het opnieuw." in first.get_content()
        second = email.message_from_bytes(mails[1], policy=email.policy.default)
        assert second["Subject"] == "hospital.test hersteld"
        # A new problem after recovery is told again.
        assert await p.alerts.raise_alert(account.id, AlertKind.DOMAIN_DNS, "hospital.test", {}, TEXTS)

    asyncio.run(main())


def test_two_watchers_at_once_tell_once(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account = await p.store.create_account("H", locale="en", notify_address="it@hospital.test")
        results = await asyncio.gather(
            *(
                p.alerts.raise_alert(account.id, AlertKind.SENDER_TLS, "cred1", {}, TEXTS)
                for _ in range(5)
            )
        )
        assert sorted(results) == [False, False, False, False, True]
        assert len(await p.events()) == 1
        assert len(await p.mails()) == 1

    asyncio.run(main())


def test_without_notify_address_only_the_event(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account = await p.store.create_account("H", locale="en", notify_address=None)
        assert await p.alerts.raise_alert(account.id, AlertKind.AUTH_FAILURES, "cred1", {"n": 9}, TEXTS)
        assert await p.events() == [("auth_failures", "raised", "cred1")]
        assert await p.mails() == []
        # Other kinds and other subjects are separate alerts.
        assert await p.alerts.raise_alert(account.id, AlertKind.AUTH_FAILURES, "cred2", {}, TEXTS)
        assert await p.alerts.raise_alert(account.id, AlertKind.SENDER_TLS, "cred1", {}, TEXTS)
        assert len(await p.alerts.open(account.id)) == 3

    asyncio.run(main())


def test_hostile_text_cannot_add_header_lines(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account = await p.store.create_account("H", locale="en", notify_address="it@hospital.test")
        evil = {"en": AlertText("x\r\nBcc: victim@else.test =?utf-8?q?a=0D=0Ab?=", "body")}
        assert await p.alerts.raise_alert(account.id, AlertKind.DOMAIN_DNS, "d", {}, evil)
        (mail,) = await p.mails()
        head = mail.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nBcc:" not in head
        assert all(not line.startswith(b"Bcc") for line in head.split(b"\r\n"))

    asyncio.run(main())
