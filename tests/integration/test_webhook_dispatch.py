"""The webhook dispatcher against a real HTTPS receiver: retry with backoff, then success;
give up after a day; events become deliveries exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from secumail.net.dns import Resolver
from secumail.pipeline.webhooks import (
    BACKOFF,
    UnsafeTarget,
    WebhookDispatcher,
    check_target,
    signature,
)
from secumail.store.database import Database
from secumail.store.schema import SCHEMA
from secumail.store.webhooks import WebhookStore
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.https import HttpsServer
from tests.harness.pki import TestCA


@pytest.fixture
def setup(tmp_path: Path, test_ca: TestCA, dns: AuthoritativeDns):
    port = free_port()
    server = HttpsServer("127.0.0.250", port, test_ca.issue("hooks.test")).start()
    dns.add("hooks.test", "A", "127.0.0.250")
    db = Database(tmp_path / "db.sqlite")
    db.open(SCHEMA)
    store = WebhookStore(db)
    dispatcher = WebhookDispatcher(
        store,
        Resolver([dns.address]),
        trust_file=test_ca.ca_file,
        allow_private=True,
        port_override=port,
    )
    yield store, dispatcher, server, db
    server.stop()
    db.close()


def _event(db: Database, kind: str = "suppressed") -> None:
    db.run_sync(
        lambda c: c.execute(
            "INSERT INTO account_events (account_id, kind, detail, at) VALUES ('acc_1', ?, ?, ?)",
            (kind, json.dumps({"address": "x@y.test"}), time.time()),
        )
    )


def test_failed_delivery_is_retried_with_backoff_then_succeeds(setup) -> None:
    store, dispatcher, server, db = setup

    async def scenario() -> None:
        hook = await store.create("acc_1", "https://hooks.test/in", ["suppressed"], "s" * 20)
        server.set_route("/in", 500, body="down", host="hooks.test")
        _event(db)
        assert await dispatcher.collect() == 1
        assert await dispatcher.collect() == 0, "each event becomes a delivery once"
        await dispatcher.deliver_due()
        first = (await store.deliveries(hook.id))[0]
        assert (first.status, first.attempts, first.last_status) == ("pending", 1, 500)
        assert first.next_at - time.time() == pytest.approx(BACKOFF[0], abs=5)
        assert await store.due() == [], "not before the backoff"
        server.set_route("/in", 200, body="ok", host="hooks.test")
        db.run_sync(lambda c: c.execute("UPDATE webhook_deliveries SET next_at = 0"))
        await dispatcher.deliver_due()
        done = (await store.deliveries(hook.id))[0]
        assert (done.status, done.attempts, done.last_status) == ("delivered", 2, 200)
        posts = [r for r in server.requests if r.method == "POST"]
        assert len(posts) == 2
        t = int(posts[1].headers["secumail-signature"].split(",")[0][2:])
        assert posts[1].headers["secumail-signature"] == signature("s" * 20, t, posts[1].body)
        assert json.loads(posts[1].body)["type"] == "suppressed"

    asyncio.run(scenario())


def test_gives_up_after_a_day(setup) -> None:
    store, dispatcher, server, db = setup

    async def scenario() -> None:
        hook = await store.create("acc_1", "https://hooks.test/in", ["suppressed"], "s" * 20)
        server.set_route("/in", 503, body="busy", host="hooks.test")
        _event(db)
        await dispatcher.collect()
        db.run_sync(
            lambda c: c.execute("UPDATE webhook_deliveries SET created_at = created_at - 86401")
        )
        await dispatcher.deliver_due()
        assert (await store.deliveries(hook.id))[0].status == "failed"

    asyncio.run(scenario())


def test_ssrf_guard() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fd00::1"):
        with pytest.raises(UnsafeTarget):
            check_target("https://x.test/", [address], allow_private=False)
    check_target("https://x.test/", ["93.184.216.34"], allow_private=False)
    with pytest.raises(UnsafeTarget):
        check_target("http://x.test/", ["93.184.216.34"], allow_private=False)
