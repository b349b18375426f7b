"""What the NATS JetStream bus keeps beyond the shared contract (tests/contract), against
a real ``nats-server -js`` of its own (tests/harness/nats.py).

The contract's ordering for a bus whose queues live apart from the store: writes first,
then the follow-ups (deduplicated by ``Nats-Msg-Id``), then the acknowledgement. A crash
between the last two repeats the stage; these tests show the repeat queues no follow-up
twice, that a stale claim's late settle adds none either, and that a message on the
stream that no worker wrote (hostile or corrupt) is dropped instead of blocking the
queue. The crash is the one fault made by hand: the acknowledgement raises.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from secumail.pipeline.bus import Claimed, Job, Publish
from secumail.pipeline.nats_bus import NATS_BUS_SCHEMA, NatsBus
from secumail.store.database import Database
from tests.harness import free_port
from tests.harness.nats import NatsServer

SHORT = 0.05
LONG = 3600.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer() as s:
        yield s


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(tmp_path / "store.sqlite")
    d.open([*NATS_BUS_SCHEMA, "CREATE TABLE marks (n INTEGER PRIMARY KEY, name TEXT)"])
    yield d
    d.close()


def mark(name: str) -> Callable[[sqlite3.Connection], None]:
    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO marks (name) VALUES (?)", (name,))

    return op


async def marked(db: Database) -> list[str]:
    return await db.read(lambda c: [str(r[0]) for r in c.execute("SELECT name FROM marks ORDER BY n")])


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (answer := await probe()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
    return answer


def run(server: NatsServer, db: Database, main: Callable[..., Awaitable[None]]) -> None:
    stream = "T_" + secrets.token_hex(6)

    async def whole() -> None:
        made: list[NatsBus] = []

        async def bus(lease: float = LONG) -> NatsBus:
            b = await NatsBus.connect(server.url, db, stream=stream, bound=100, lease=lease)
            made.append(b)
            return b

        try:
            await main(bus)
        finally:
            for b in made:
                await b.close()
            await db.drain()

    asyncio.run(whole())


class Crash(Exception):
    """The worker died after publishing the follow-ups, before the acknowledgement."""


def test_a_stage_repeated_after_a_crash_before_the_ack_queues_its_follow_ups_once(
    server: NatsServer, db: Database
) -> None:
    async def main(bus: Callable[..., Awaitable[NatsBus]]) -> None:
        dying, other = await bus(lease=SHORT), await bus()
        await dying.publish("route", Job("M1"))
        (first,) = await dying.claim("route", 1)

        async def crash(claimed: Claimed) -> None:
            raise Crash

        dying._remove = crash  # type: ignore[method-assign]
        then = [Publish("sign", Job("M1", {"n": 1})), Publish("notify", Job("M1"), delay=LONG)]
        with pytest.raises(Crash):
            await dying.settle(first, then, [mark("routed")])
        assert await other.depths() == {"route": 1, "sign": 1, "notify": 1}
        # The lease runs out; the stage runs again and settles with the same follow-ups.
        (again,) = await eventually(lambda: other.claim("route", 1))
        assert again.attempts == 2
        assert await other.settle(again, then, [mark("routed again")]) is True
        assert await marked(db) == ["routed", "routed again"]
        assert await other.depths() == {"sign": 1, "notify": 1}, "no follow-up twice"
        (nxt,) = await other.claim("sign", 10)
        assert nxt.job.payload == {"n": 1}

    run(server, db, main)


def test_a_stale_claim_settling_after_the_holder_queues_nothing(
    server: NatsServer, db: Database
) -> None:
    async def main(bus: Callable[..., Awaitable[NatsBus]]) -> None:
        slow, taker = await bus(lease=SHORT), await bus()
        await slow.publish("deliver", Job("M1"))
        (stale,) = await slow.claim("deliver", 1)
        (fresh,) = await eventually(lambda: taker.claim("deliver", 1))
        assert await taker.settle(fresh, [Publish("notify", Job("M1"))]) is True
        late = [Publish("notify", Job("M1")), Publish("report", Job("M1"))]
        assert await slow.settle(stale, late, [mark("delivered")]) is False
        assert await marked(db) == ["delivered"], "its writes are kept"
        assert await taker.depths() == {"notify": 1}

    run(server, db, main)


def test_a_message_no_worker_wrote_is_dropped_and_the_queue_goes_on(
    server: NatsServer, db: Database
) -> None:
    async def main(bus: Callable[..., Awaitable[NatsBus]]) -> None:
        b = await bus()
        js = b.nc.jetstream()
        subject = f"{b.stream}.route.now"
        await js.publish(subject, b"\xff not json")
        await js.publish(subject, json.dumps({"id": 1, "payload": []}).encode())
        good = json.dumps({"id": "M", "payload": {}}).encode()
        for header, value in [
            ("Secumail-Due", "inf"),
            ("Secumail-Due", "nan"),
            ("Secumail-Attempts", "-3"),
            ("Secumail-Claim", "token-without-lease"),
        ]:
            await js.publish(subject, good, headers={header: value})
        await b.publish("route", Job("M1", {"ok": True}))
        (c,) = await b.claim("route", 10)
        assert (c.job.message_id, c.job.payload, c.attempts) == ("M1", {"ok": True}, 1)
        assert await b.depths() == {"route": 1}

    run(server, db, main)


@pytest.mark.parametrize("queue", ["a.b", "route.*", ">", "", "x y", "route\r\nX: 1"])
def test_queue_names_that_are_not_one_subject_token_are_refused(
    server: NatsServer, db: Database, queue: str
) -> None:
    async def main(bus: Callable[..., Awaitable[NatsBus]]) -> None:
        b = await bus()
        with pytest.raises(ValueError, match="letters, digits"):
            await b.publish(queue, Job("M1"))
        with pytest.raises(ValueError, match="letters, digits"):
            await b.claim(queue, 1)
        assert await b.depths() == {}

    run(server, db, main)


def test_the_claims_of_settled_jobs_leave_the_store(server: NatsServer, db: Database) -> None:
    # The row of an ended claim stays until its message has left the stream, then goes
    # with the bus's next transaction (or at close): the store does not grow per job.
    async def main(bus: Callable[..., Awaitable[NatsBus]]) -> None:
        b = await bus()
        for i in range(5):
            await b.publish("route", Job(f"M{i}"))
        for c in await b.claim("route", 10):
            assert await b.settle(c, [])
        assert await b.claim("route", 10) == []
        (kept,) = [await b.publish_claimed("sign", Job("M9"))]
        assert await b.retry(kept, LONG) is True
        await b.close()
        rows = await db.read(lambda c: c.execute("SELECT COUNT(*) FROM bus_claims").fetchone())
        assert rows[0] == 0

    run(server, db, main)


def test_nats_down_is_bus_unavailable_and_the_intake_refuses_new_work(db: Database) -> None:
    """No NATS server at bus.url: every call says `BusUnavailable` (a Secumail error with
    the URL), and the intake answers "full" — a temporary refusal — instead of crashing
    the SMTP session."""
    from secumail.errors import BusUnavailable
    from secumail.pipeline.intake import Intake

    async def main() -> None:
        dead = f"nats://127.0.0.1:{free_port()}"
        bus = NatsBus(dead, db, stream="T_DOWN", bound=100, lease=LONG)
        with pytest.raises(BusUnavailable, match="cannot connect"):
            await bus.claim("route", 1)
        with pytest.raises(BusUnavailable):
            await NatsBus.connect(dead, db, stream="T_DOWN", bound=100, lease=LONG)
        intake = Intake(None, None, bus, "route")  # type: ignore[arg-type]  # only `full` is asked
        assert await intake.full() is True
        await bus.close()

    asyncio.run(main())
