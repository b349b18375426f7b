"""Watching senders (pipeline/sender_watch.py): a credential's TLS falling below what it
used before, and bursts of failed logins — each told once, and once when over. On a real
database with the real AccountAlerts and intake; only the clock is ours."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os

from secumail.net.tls import ClientCertificate
from secumail.pipeline.account_alerts import AccountAlerts
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.intake import Intake
from secumail.pipeline.sender_watch import Sender, SenderWatch
from secumail.spool.body_store import BodyStore
from secumail.store.credential_tls import CredentialTlsStore
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore

T13 = ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
T12 = ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
T12_CBC = ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Parts:
    def __init__(self, db: Database, clock: Clock, failures: int = 10, window: float = 600) -> None:
        self.db = db
        self.store = MetadataStore(db)
        self.bodies = BodyStore(db, os.urandom(32))
        self.bus = EmbeddedBus(db, bound=100, lease=60.0)
        self.intake = Intake(self.store, self.bodies, self.bus, "route")
        self.alerts = AccountAlerts(db, self.store, self.intake, hostname="relay.gw.test", clock=clock)
        self.records = CredentialTlsStore(db)
        self.clock = clock
        self.failures, self.window = failures, window
        self.watch = self.new_watch()

    def new_watch(self) -> SenderWatch:
        """A watch as a restarted process has it: nothing in memory."""
        return SenderWatch(
            self.alerts,
            self.records,
            auth_failures=self.failures,
            auth_window=self.window,
            clock=self.clock,
        )

    async def sender(self, locale: str = "en") -> Sender:
        account = await self.store.create_account(
            f"H{os.urandom(3).hex()}", locale=locale, notify_address="it@hospital.test"
        )
        cred = await self.store.create_credential(account.id, "smtp", f"h-{os.urandom(4).hex()}", "x")
        return Sender(cred.id, account.id, cred.username)

    async def told(self) -> list[tuple[str, str, dict]]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT kind, detail FROM account_events ORDER BY id").fetchall()
        )
        return [(r[0], json.loads(r[1])["state"], json.loads(r[1])) for r in rows]

    async def mails(self) -> list[email.message.EmailMessage]:
        rows = await self.db.read(lambda c: c.execute("SELECT id FROM messages ORDER BY rowid").fetchall())
        return [
            email.message_from_bytes(await self.bodies.get(r[0]), policy=email.policy.default)  # type: ignore[misc]
            for r in rows
        ]


def test_a_downgrade_is_told_once_and_the_recovery_once(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender(locale="nl")
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.submitted(s, "smtp", *T12)
        await p.watch.settled()
        await p.watch.submitted(s, "smtp", *T12)  # still down: nothing new
        await p.watch.submitted(s, "api", *T12)
        await p.watch.settled()
        told = await p.told()
        assert [(k, st) for k, st, _ in told] == [("sender_tls_warning", "raised")]
        detail = told[0][2]
        assert detail["about"] == s.credential_id and detail["username"] == s.username
        assert detail["before"] == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
        assert detail["now"] == {"version": "TLSv1.2", "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256"}
        assert detail["channel"] == "smtp"
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.settled()
        assert [(k, st) for k, st, _ in await p.told()] == [
            ("sender_tls_warning", "raised"),
            ("sender_tls_warning", "resolved"),
        ]
        mails = await p.mails()
        assert [m["Subject"] for m in mails] == [
            f"Zwakkere TLS van afzender {s.username}",  # the account's language
            f"TLS van afzender {s.username} is weer sterk",
        ]
        assert "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256" in mails[0].get_content()

    asyncio.run(main())


def test_first_use_and_upgrades_are_not_alerts(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        await p.watch.submitted(s, "smtp", *T12_CBC)
        await p.watch.submitted(s, "smtp", *T12)  # stronger cipher: the new best
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.submitted(s, "api", None, None)  # no TLS (plain_http): not compared
        await p.watch.settled()
        assert await p.told() == []
        await p.watch.submitted(s, "smtp", *T12)  # below the best (TLS 1.3) now
        await p.watch.settled()
        assert [st for _, st, _ in await p.told()] == ["raised"]

    asyncio.run(main())


def test_a_weaker_cipher_in_the_same_version_is_a_downgrade(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        await p.watch.submitted(s, "smtp", *T12)
        await p.watch.submitted(s, "smtp", *T12_CBC)
        await p.watch.settled()
        ((_, state, detail),) = await p.told()
        assert state == "raised" and detail["now"]["cipher"] == "ECDHE-ECDSA-AES128-SHA256"

    asyncio.run(main())


def test_a_restart_remembers_what_the_sender_used_before(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.close()
        record = await p.records.get(s.credential_id)
        assert record is not None and record.best_version == "TLSv1.3"
        restarted = p.new_watch()
        await restarted.submitted(s, "smtp", *T12)
        await restarted.settled()
        assert [st for _, st, _ in await p.told()] == ["raised"]
        # Another restart while it is open: the recovery is still told (once).
        again = p.new_watch()
        await again.submitted(s, "smtp", *T12)
        await again.submitted(s, "smtp", *T13)
        await again.settled()
        assert [st for _, st, _ in await p.told()] == ["raised", "resolved"]
        await again.close()
        stored = await p.records.get(s.credential_id)
        assert stored is not None and stored.last_version == "TLSv1.3" and stored.best_rank == stored.last_rank

    asyncio.run(main())


def test_two_processes_keep_the_strongest_best(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        one, two = p.new_watch(), p.new_watch()
        p.clock.now += 1
        await one.submitted(s, "smtp", *T12)  # the later use, written first
        p.clock.now -= 1
        await two.submitted(s, "smtp", *T13)  # the earlier use, written last
        await one.close()
        await two.close()
        record = await p.records.get(s.credential_id)
        assert record is not None and record.best_version == "TLSv1.3"  # the strongest either saw
        assert record.last_version == "TLSv1.2"  # the latest use, whatever the order of writes
        p.clock.now += 10
        await one.submitted(s, "smtp", *T12)
        await one.close()
        record = await p.records.get(s.credential_id)
        assert record is not None and record.best_version == "TLSv1.3"  # a weaker best never lowers it

    asyncio.run(main())


def test_a_burst_of_failed_logins_is_told_once_and_its_end_after_a_quiet_window(
    gateway_db: Database,
) -> None:
    async def main() -> None:
        clock = Clock()
        p = Parts(gateway_db, clock, failures=5, window=600)
        s = await p.sender()
        for _ in range(4):
            p.watch.login_failed(s.username, s)
            clock.now += 10
        await p.watch.settled()
        assert await p.told() == []
        p.watch.login_failed(s.username, s)  # the 5th within the window
        for _ in range(20):  # throttled attempts: matched by username
            p.watch.login_failed(s.username, None)
        await p.watch.settled()
        told = await p.told()
        assert [(k, st) for k, st, _ in told] == [("auth_failures", "raised")]
        assert told[0][2]["failures"] == 5 and "password" not in json.dumps(told[0][2])
        clock.now += 599
        await p.watch.sweep()
        await p.watch.settled()
        assert len(await p.told()) == 1  # not quiet for a whole window yet
        clock.now += 2
        await p.watch.sweep()
        await p.watch.settled()
        assert [(k, st) for k, st, _ in await p.told()] == [
            ("auth_failures", "raised"),
            ("auth_failures", "resolved"),
        ]
        await p.watch.sweep()
        await p.watch.settled()
        assert len(await p.told()) == 2

    asyncio.run(main())


def test_failures_spread_wider_than_the_window_are_no_burst(gateway_db: Database) -> None:
    async def main() -> None:
        clock = Clock()
        p = Parts(gateway_db, clock, failures=3, window=60)
        s = await p.sender()
        for _ in range(10):
            p.watch.login_failed(s.username, s)
            clock.now += 31
        await p.watch.settled()
        assert await p.told() == []

    asyncio.run(main())


def test_unknown_usernames_cost_nothing(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock(), failures=2)
        for i in range(1000):
            p.watch.login_failed(f"guess{i}", None)
        await p.watch.settled()
        assert await p.told() == []
        assert p.watch._failures == {} and p.watch._by_username == {}

    asyncio.run(main())


def test_an_open_burst_left_by_a_restart_is_resolved_by_the_sweep(gateway_db: Database) -> None:
    async def main() -> None:
        clock = Clock()
        p = Parts(gateway_db, clock, failures=2, window=60)
        s = await p.sender()
        p.watch.login_failed(s.username, s)
        p.watch.login_failed(s.username, s)
        await p.watch.settled()
        restarted = p.new_watch()
        clock.now += 61
        await restarted.sweep()
        await restarted.settled()
        told = await p.told()
        assert [st for _, st, _ in told] == ["raised", "resolved"]
        assert told[1][2]["username"] == s.username

    asyncio.run(main())


def test_a_failed_write_is_told_later_not_lost(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        await p.watch.submitted(s, "smtp", *T13)
        real = p.alerts.raise_alert
        calls = 0

        async def failing(*args: object, **kw: object) -> bool:
            nonlocal calls
            calls += 1
            raise OSError("disk full")

        p.alerts.raise_alert = failing  # type: ignore[method-assign]
        await p.watch.submitted(s, "smtp", *T12)
        await p.watch.settled()
        assert calls == 1 and await p.told() == []
        p.alerts.raise_alert = real  # type: ignore[method-assign]
        await p.watch.sweep()
        await p.watch.settled()
        assert [st for _, st, _ in await p.told()] == ["raised"]

    asyncio.run(main())


def test_throttled_attempts_count_for_an_existing_credential_only(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock(), failures=3)
        s = await p.sender()
        revoked = await p.sender()
        await p.store.revoke_credential(revoked.credential_id)
        for name in (s.username, revoked.username, "nobody"):
            for _ in range(3):  # the network was blocked before any password was checked
                await p.watch.login_throttled(name, p.store.credential_by_username)
        await p.watch.settled()
        told = await p.told()
        assert [(k, st, d["about"]) for k, st, d in told] == [
            ("auth_failures", "raised", s.credential_id)
        ]

    asyncio.run(main())


def test_a_new_credential_is_written_at_once_not_only_at_the_sweep(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db, Clock())
        s = await p.sender()
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.settled()  # no close, no sweep: as a process killed right after
        record = await p.records.get(s.credential_id)
        assert record is not None and record.best_version == "TLSv1.3"
        # The same TLS again changes only the time: kept in memory until the sweep.
        p.clock.now += 5
        await p.watch.submitted(s, "smtp", *T13)
        await p.watch.settled()
        stored = await p.records.get(s.credential_id)
        assert stored is not None and stored.last_seen == record.last_seen
        await p.watch.sweep()
        stored = await p.records.get(s.credential_id)
        assert stored is not None and stored.last_seen == record.last_seen + 5

    asyncio.run(main())


def test_a_client_certificate_near_its_end_is_told_once_and_its_renewal_once(
    gateway_db: Database,
) -> None:
    async def main() -> None:
        clock = Clock()
        p = Parts(gateway_db, clock)
        s = await p.sender()
        day = 86400.0
        old = ClientCertificate(clock.now + 10 * day, "aa" * 32)
        new = ClientCertificate(clock.now + 365 * day, "bb" * 32)
        for _ in range(3):
            await p.watch.submitted(s, "smtp", *T13, old)
            await p.watch.settled()
        await p.watch.submitted(s, "smtp", *T13)  # without a certificate: no news either way
        await p.watch.settled()
        ((kind, state, detail),) = await p.told()
        assert (kind, state) == ("sender_tls_warning", "raised")
        assert detail["reason"] == "client_certificate_expires"
        assert detail["about"] == f"{s.credential_id}/client-certificate"
        assert detail["client_certificate"]["sha256"] == "aa" * 32
        # The TLS alert of the same credential is another alert: a downgrade is still told.
        await p.watch.submitted(s, "smtp", *T12, old)
        await p.watch.settled()
        await p.watch.submitted(s, "smtp", *T13, new)
        await p.watch.settled()
        assert [(d["about"], st) for _, st, d in await p.told()] == [
            (f"{s.credential_id}/client-certificate", "raised"),
            (s.credential_id, "raised"),
            (s.credential_id, "resolved"),
            (f"{s.credential_id}/client-certificate", "resolved"),
        ]
        mails = await p.mails()
        assert mails[0]["Subject"].startswith(f"Client certificate of sender {s.username} expires")

    asyncio.run(main())


def test_the_sweep_warns_when_a_certificate_comes_within_30_days(gateway_db: Database) -> None:
    async def main() -> None:
        clock = Clock()
        p = Parts(gateway_db, clock)
        s = await p.sender()
        cert = ClientCertificate(clock.now + 31 * 86400.0, "cc" * 32)
        await p.watch.submitted(s, "smtp", *T13, cert)
        await p.watch.sweep()
        await p.watch.settled()
        assert await p.told() == []
        clock.now += 2 * 86400.0
        await p.watch.sweep()
        await p.watch.settled()
        assert [st for _, st, _ in await p.told()] == ["raised"]

    asyncio.run(main())
