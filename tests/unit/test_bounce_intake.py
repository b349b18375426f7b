"""The inbound MX's policy (pipeline/bounce_intake.py `BounceIntake`): which recipients
the session takes (RFC 5321 §3.6: never a relay), and what a bounce changes in the store,
on a real database, in memory (no sockets). The session side runs through the real
`SubmissionSession` (tests/unit/test_submission_session.py's in-memory connection)."""

from __future__ import annotations

import asyncio

import pytest

from secumail.mail.address import Address
from secumail.mail.bounces import Bounce, BouncedRecipient
from secumail.mail.ids import new_message_id
from secumail.mail.status import RecipientStatus
from secumail.mail.verp import bounce_address
from secumail.net.smtp_server import Envelope
from secumail.pipeline.bounce_intake import BounceIntake
from secumail.pipeline.bus import Job
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.inbound_mx import InboundMx
from secumail.store.counters import Counters
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage, RecipientUpdate
from secumail.store.suppressions import SuppressionStore
from tests.unit.test_submission_session import HOST, Conversation, talk

KEY = b"k" * 32
DR = "dr@clinic.test"


def failed(address: str | None, status: str = "5.1.1", action: str = "failed") -> Bounce:
    return Bounce(
        "dsn",
        (BouncedRecipient(address, action, status, f"550 {status} gone", "mx.clinic.test"),),
        "mx.clinic.test",
    )


# A report about two other addresses: nothing in it is about the bounce address's recipient.
two_others = Bounce(
    "dsn", failed("a@else.test").recipients + failed("b@else.test").recipients, None
)


class World:
    def __init__(self, db: Database, bounce: Bounce | None = None) -> None:
        self.store = MetadataStore(db)
        self.suppressions = SuppressionStore(db)
        self.counters = Counters(db)
        self.bus = EmbeddedBus(db, bound=100, lease=5.0)
        self.bounce = bounce
        self.intake = BounceIntake(
            self.store,
            self.suppressions,
            self.counters,
            self.bus,
            verp_key=KEY,
            hostname=HOST,
            parse=lambda raw: self.bounce,
        )

    async def sent(self, *recipients: str, mail_from: str = "alice@hospital.test") -> tuple[str, str]:
        account = await self.store.create_account("H", locale="nl", notify_address=None)
        mid = new_message_id()
        await self.store.db.run(
            self.store.insert_message_op(
                NewMessage(mid, account.id, mail_from, list(recipients), 100)
            )
        )
        await self.store.record_outcome(
            mid, [RecipientUpdate(r, RecipientStatus.DELIVERED, "250 2.0.0 ok", "2.0.0") for r in recipients]
        )
        return mid, account.id

    async def bounce_to(self, *addresses: str) -> str:
        envelope = Envelope("192.0.2.9", "mx.clinic.test", None, None, None)
        envelope.rcpt_to = [Address(*a.rsplit("@", 1)) for a in addresses]
        return str(await self.intake.accept(None, envelope, b"ignored: parse is stubbed"))


def run(coro):
    return asyncio.run(coro)


def test_a_failed_report_bounces_the_recipient_suppresses_and_queues_a_notice(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db, failed("dr@clinic.test"))
        mid, account = await w.sent("dr@clinic.test", "other@clinic.test")
        reply = await w.bounce_to(bounce_address(KEY, mid, "dr@clinic.test", HOST))
        assert reply.startswith("250 2.0.0")
        record = await w.store.message(mid)
        by = {r.address: r for r in record.recipients}
        assert by["dr@clinic.test"].status is RecipientStatus.BOUNCED
        assert by["dr@clinic.test"].reply == "550 5.1.1 gone" and by["dr@clinic.test"].enhanced == "5.1.1"
        assert by["other@clinic.test"].status is RecipientStatus.DELIVERED
        late = [e for e in record.events if e.kind == "bounced"]
        assert len(late) == 1 and late[0].detail["late"] and late[0].detail["mx"] == "mx.clinic.test"
        assert await w.suppressions.find(account, "dr@clinic.test") is not None
        jobs = await w.bus.claim("notify", 10)
        assert [j.job.payload for j in jobs] == [{"kind": "bounced", "recipient": "dr@clinic.test"}]
        # The same bounce again: nothing more, counted.
        await w.bounce_to(bounce_address(KEY, mid, "dr@clinic.test", HOST))
        assert await w.bus.claim("notify", 10) == []
        assert await w.counters.all() == {"bounces_dropped:repeated": 1}

    run(go())


def test_a_permanent_refusal_that_is_not_about_the_address_bounces_without_a_suppression(
    gateway_db,
) -> None:
    """5.7.1 (a policy or spam verdict) is permanent for this message but says nothing
    lasting about the address: the same rule as a refusal at delivery (5.1.x only)."""

    async def go() -> None:
        w = World(gateway_db, failed("dr@clinic.test", status="5.7.1"))
        mid, account = await w.sent("dr@clinic.test")
        await w.bounce_to(bounce_address(KEY, mid, "dr@clinic.test", HOST))
        recipient = (await w.store.message(mid)).recipients[0]
        assert recipient.status is RecipientStatus.BOUNCED and recipient.enhanced == "5.7.1"
        assert await w.suppressions.find(account, "dr@clinic.test") is None
        jobs = await w.bus.claim("notify", 10)
        assert [j.job.payload for j in jobs] == [{"kind": "bounced", "recipient": "dr@clinic.test"}]

    run(go())


def test_a_temporary_failure_bounces_without_a_suppression(gateway_db) -> None:
    async def go() -> None:
        # The report's only entry names another address (a forward): the bounce address
        # says whose it is.
        w = World(gateway_db, failed("dr.forwarded@elsewhere.test", status="4.4.7"))
        mid, account = await w.sent("dr@clinic.test")
        await w.bounce_to(bounce_address(KEY, mid, "dr@clinic.test", HOST))
        assert (await w.store.message(mid)).recipients[0].status is RecipientStatus.BOUNCED
        assert await w.suppressions.find(account, "dr@clinic.test") is None

    run(go())


@pytest.mark.parametrize(
    ("bounce", "address_of", "reason"),
    [
        (failed("dr@clinic.test"), lambda mid: bounce_address(b"x" * 32, mid, DR, HOST), "forged_address"),
        (failed("dr@clinic.test"), lambda mid: bounce_address(KEY, new_message_id(), DR, HOST), "unknown_message"),
        (None, lambda mid: bounce_address(KEY, mid, DR, HOST), "unreadable"),
        (two_others, lambda mid: bounce_address(KEY, mid, DR, HOST), "no_entry"),
        (failed(DR, "2.0.0", "delivered"), lambda mid: bounce_address(KEY, mid, DR, HOST), "not_a_failure"),
    ],
)
def test_bounces_that_change_nothing_are_answered_250_and_counted(
    gateway_db, bounce: Bounce | None, address_of, reason: str
) -> None:
    async def go() -> None:
        w = World(gateway_db, bounce)
        mid, account = await w.sent("dr@clinic.test", "b@clinic.test")
        assert (await w.bounce_to(address_of(mid))).startswith("250 2.0.0")
        record = await w.store.message(mid)
        assert {r.status for r in record.recipients} == {RecipientStatus.DELIVERED}
        assert await w.suppressions.find(account, "dr@clinic.test") is None
        assert await w.bus.claim("notify", 10) == []
        assert await w.counters.all() == {f"bounces_dropped:{reason}": 1}

    run(go())


def test_a_delay_report_is_an_event_only(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db, failed("dr@clinic.test", "4.2.2", "delayed"))
        mid, _ = await w.sent("dr@clinic.test")
        await w.bounce_to(bounce_address(KEY, mid, "dr@clinic.test", HOST))
        record = await w.store.message(mid)
        assert record.recipients[0].status is RecipientStatus.DELIVERED
        assert [e.detail["status"] for e in record.events if e.kind == "bounce_delayed"] == ["4.2.2"]
        assert await w.bus.claim("notify", 10) == []

    run(go())


# -- the session with this policy: RFC 5321 §3.6, never a relay ------------------------


def inbound_conversation(gateway_db: Database) -> Conversation:
    # The session's policy is the inbound MX's (bounces only: no TLS report address).
    return Conversation(InboundMx(World(gateway_db).intake, None), max_recipients=3)  # type: ignore[arg-type]


def test_only_bounce_addresses_of_this_host_are_taken(gateway_db) -> None:
    good = bounce_address(KEY, new_message_id(), "dr@clinic.test", HOST)
    refused = [
        "x@clinic.test",
        f"x%clinic.test@{HOST}",
        f"x@clinic.test@{HOST}",
        f'"{good.split("@")[0]}"@{HOST}',
        good.split("@")[0] + "@[192.0.2.1]",
        good.split("@")[0] + "@clinic.test",
        "postmaster",
        f"postmaster@{HOST}",
    ]

    async def go() -> None:
        for address in refused:
            c = inbound_conversation(gateway_db)
            await c.open()
            await c.send(b"EHLO mx.clinic.test\r\n")
            assert await c.send(b"MAIL FROM:<>\r\n") == ["250 2.1.0 Sender ok"]
            assert (await c.send(f"RCPT TO:<{address}>\r\n".encode()))[0].startswith("550 5.1.1"), address
        c = inbound_conversation(gateway_db)
        await c.open()
        await c.send(b"EHLO mx.clinic.test\r\n")
        await c.send(b"MAIL FROM:<>\r\n")
        assert await c.send(f"RCPT TO:<{good.upper()}>\r\n".encode()) == ["250 2.1.5 Recipient ok"]
        # a source route that ends here: ignored (RFC 5321 §4.1.1.3), the mailbox is ours
        assert await c.send(f"RCPT TO:<@relay.test:{good}>\r\n".encode()) == ["250 2.1.5 Recipient ok"]
        assert (await c.send(f"RCPT TO:<{good}x>\r\n".encode()))[0].startswith("550 5.1.1")

    talk(go)


def test_no_auth_plain_text_allowed_starttls_offered(gateway_db) -> None:
    async def go() -> None:
        c = inbound_conversation(gateway_db)
        await c.open()
        ehlo = await c.send(b"EHLO mx.clinic.test\r\n")
        assert "STARTTLS" in [line[4:] for line in ehlo] and not any("AUTH" in line for line in ehlo)
        assert await c.send(b"AUTH PLAIN AGEAYg==\r\n") == ["502 5.5.1 AUTH not available here"]
        assert await c.send(b"MAIL FROM:<>\r\n") == ["250 2.1.0 Sender ok"]  # plain text: fine
        await c.send(b"STARTTLS\r\n")
        ehlo = await c.send(b"EHLO mx.clinic.test\r\n")
        assert not any("AUTH" in line or "STARTTLS" in line for line in ehlo)

    talk(go)


def test_a_flood_of_bounces_meets_the_same_admission_control_as_new_messages(
    gateway_db,
) -> None:
    """Each late bounce makes a notice: while the work waiting for the stages is at the
    bus's bound, the inbound MX answers 451 4.3.2 (the sender's MTA retries later)."""

    async def go() -> None:
        w = World(gateway_db, failed("dr@clinic.test"))
        w.bus = EmbeddedBus(gateway_db, bound=2, lease=5.0)
        w.intake.bus = w.bus
        assert await w.intake.admission() is None
        for i in range(2):
            await w.bus.publish("notify", Job(f"M{i}"))
        refused = await w.intake.admission()
        assert refused is not None and (refused.code, refused.enhanced) == (451, "4.3.2")

    run(go())
