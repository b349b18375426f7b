"""The domain health prober (pipeline/domain_health.py) on a real database with the real
keyring and alerts, against a resolver that can fail the way DNS fails (SERVFAIL): a
lookup without an answer is neither a broken record nor a fixed one."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, cast

from secumail.errors import DnsTemporaryError
from secumail.net.dns import Resolver
from secumail.pipeline.account_alerts import AccountAlerts
from secumail.pipeline.domain_health import DomainHealth
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.intake import Intake
from secumail.pipeline.preflight import Preflight
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.spool.body_store import BodyStore
from secumail.store.database import Database
from secumail.store.domain_health import DomainHealthStore
from secumail.store.metadata import MetadataStore
from secumail.store.signing import SigningStore

DOMAIN = "hospital.test"


class FlakyDns:
    """TXT answers from a dict; names in `failing` answer SERVFAIL."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.failing: set[str] = set()

    async def txt(self, name: str) -> list[str]:
        if name in self.failing:
            raise DnsTemporaryError(f"{name} TXT: DNS server failure")
        return list(self.records.get(name, []))


class Parts:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.store = MetadataStore(db)
        self.keyring = DkimKeyring(SigningStore(db), os.urandom(32))
        intake = Intake(self.store, BodyStore(db, os.urandom(32)), EmbeddedBus(db, bound=100, lease=60.0), "route")
        self.alerts = AccountAlerts(db, self.store, intake, hostname="gw.example.nl")
        self.dns = FlakyDns()
        self.health = DomainHealth(
            self.store,
            DomainHealthStore(db),
            self.keyring,
            cast(Resolver, self.dns),
            cast(Preflight, None),  # never reached: these checks skip the inbound part
            self.alerts,
            hostname="gw.example.nl",
            gateway_domain="gw.example.nl",
            bounce_addresses=False,
        )

    async def onboard(self) -> str:
        account = await self.store.create_account("H", locale="en", notify_address=None)
        domain = await self.store.add_domain(account.id, DOMAIN)
        for record in await self.keyring.ensure_keys(DOMAIN):
            self.dns.records[record.name] = [record.value]
        self.dns.records[f"_secumail.{DOMAIN}"] = [f"secumail-verification={domain.token}"]
        self.dns.records[DOMAIN] = ["v=spf1 a:gw.example.nl -all"]
        self.dns.records[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=reject"]
        await self.keyring.check_published(DOMAIN, self.dns.txt)  # `domain verify`
        return account.id

    async def told(self) -> list[tuple[str, str]]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT kind, detail FROM account_events ORDER BY id").fetchall()
        )
        return [(r[0], json.loads(r[1])["state"]) for r in rows]


def test_a_dns_failure_is_neither_a_break_nor_a_fix(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account_id = await p.onboard()
        report = await p.health.check(DOMAIN, inbound=False)
        assert report.problems == [] and await p.told() == []

        p.dns.failing.add(f"_secumail.{DOMAIN}")  # SERVFAIL: not "missing"
        report = await p.health.check(DOMAIN, inbound=False)
        (failed,) = [c for c in report.checks if c.id == "secumail_ownership"]
        assert failed.problem == "dns_failure" and report.problems == []
        assert await p.told() == []

        p.dns.failing.clear()
        rsa = next(r for r in await p.keyring.records(DOMAIN) if r.algorithm.startswith("rsa"))
        del p.dns.records[rsa.name]
        await p.health.check(DOMAIN, inbound=False)
        await p.health.check(DOMAIN, inbound=False)
        assert await p.told() == [("domain_dns_error", "raised")]
        assert [a.about for a in await p.alerts.open(account_id)] == [DOMAIN]

        p.dns.failing.add(rsa.name)  # no answer while the alert is open: it stays open
        await p.health.check(DOMAIN, inbound=False)
        assert await p.told() == [("domain_dns_error", "raised")]

        p.dns.failing.clear()
        p.dns.records[rsa.name] = [rsa.value]
        await p.health.check(DOMAIN, inbound=False)
        assert await p.told() == [("domain_dns_error", "raised"), ("domain_dns_error", "resolved")]

    asyncio.run(main())


def test_the_check_watches_and_does_not_stop_signing(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        await p.onboard()
        before = await p.keyring.signing_keys(DOMAIN)
        assert (await p.health.check(DOMAIN, inbound=False)).problems == []
        p.dns.records = {k: v for k, v in p.dns.records.items() if "._domainkey." not in k}
        report = await p.health.check(DOMAIN, inbound=False)
        assert {c.id for c in report.problems} == {"auth_dkim_exist", "auth_dmarc_alignment"}
        keys = await p.keyring.records(DOMAIN)
        assert all(k.published for k in keys)  # still marked published: mail keeps being signed
        assert [k.selector for k in before] == [k.selector for k in await p.keyring.signing_keys(DOMAIN)]

    asyncio.run(main())


def test_spf_includes_are_followed_within_the_lookup_limit(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        await p.onboard()
        p.dns.records[DOMAIN] = ["v=spf1 include:l0.test -all"]
        for i in range(15):  # a chain longer than RFC 7208 §4.6.4 allows
            p.dns.records[f"l{i}.test"] = [f"v=spf1 include:l{i + 1}.test -all"]
        p.dns.records["l15.test"] = ["v=spf1 a:gw.example.nl -all"]
        report = await p.health.check(DOMAIN, inbound=False)
        gateway: Any = next(c for c in report.checks if c.id == "auth_spf_gateway")
        assert gateway.status == "fail"  # beyond 10 lookups receivers give up too
        p.dns.records["l3.test"] = ["v=spf1 a:gw.example.nl -all"]
        report = await p.health.check(DOMAIN, inbound=False)
        gateway = next(c for c in report.checks if c.id == "auth_spf_gateway")
        assert gateway.status == "ok"

    asyncio.run(main())



def test_a_removed_domain_takes_its_report_and_open_alert_along(gateway_db: Database) -> None:
    async def main() -> None:
        p = Parts(gateway_db)
        account_id = await p.onboard()
        del p.dns.records[f"_secumail.{DOMAIN}"]
        assert (await p.health.check(DOMAIN, inbound=False)).problems
        assert len(await p.alerts.open(account_id)) == 1
        await p.store.delete_domain(DOMAIN)
        assert await p.alerts.open(account_id) == []
        assert await p.health.last(DOMAIN) is None
        assert await p.told() == [("domain_dns_error", "raised")]  # nobody told on removal

    asyncio.run(main())
