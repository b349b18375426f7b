"""The embedded bus: durable queues in SQLite with leases (at-least-once delivery),
delayed retries, atomic settle-and-publish and admission bounds (SEDA, docs/architecture.md)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from secumail.pipeline.bus import Job, Publish
from secumail.pipeline.embedded_bus import BUS_SCHEMA, EmbeddedBus
from secumail.store.database import Database

LONG = 3600.0


def run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro())


def test_publish_then_claim(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("route", Job("M1", {"rcpt": ["bob@example.test"], "n": "ö"}))
        (got,) = await bus.claim("route", 10)
        assert (got.queue, got.job.message_id, got.attempts) == ("route", "M1", 1)
        assert got.job.payload == {"rcpt": ["bob@example.test"], "n": "ö"}
        assert await bus.claim("sign", 10) == []  # queues are separate

    run(main)


def test_claim_is_fifo_and_respects_the_limit(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        for i in range(5):
            await bus.publish("route", Job(f"M{i}"))
        first = await bus.claim("route", 2)
        rest = await bus.claim("route", 10)
        assert [c.job.message_id for c in first] == ["M0", "M1"]
        assert [c.job.message_id for c in rest] == ["M2", "M3", "M4"]

    run(main)


def test_a_claimed_job_is_not_claimed_again_while_leased(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("route", Job("M1"))
        assert len(await bus.claim("route", 10)) == 1
        assert await bus.claim("route", 10) == []
        assert await bus.depths() == {"route": 1}  # still there, only leased

    run(main)


def test_a_lapsed_lease_lets_the_job_be_claimed_again(bus_db: Database) -> None:
    # A worker that dies mid-job loses nothing: the job comes back (at-least-once).
    bus = EmbeddedBus(bus_db, bound=100, lease=0.05)

    async def main() -> None:
        await bus.publish("route", Job("M1"))
        (first,) = await bus.claim("route", 10)
        await asyncio.sleep(0.12)
        (again,) = await bus.claim("route", 10)
        assert again.id == first.id
        assert again.attempts == 2

    run(main)


def test_renew_keeps_the_lease(bus_db: Database) -> None:
    short = EmbeddedBus(bus_db, bound=100, lease=0.05)
    long = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await short.publish("route", Job("M1"))
        claimed = await short.claim("route", 10)
        await long.renew(claimed)  # renews for the long bus's lease
        await asyncio.sleep(0.12)
        assert await short.claim("route", 10) == []

    run(main)


def test_retry_with_delay_hides_the_job_until_then(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("deliver", Job("M1", {"try": 1}))
        (c,) = await bus.claim("deliver", 10)
        await bus.retry(c, LONG)
        assert await bus.claim("deliver", 10) == []
        # Retrying with no delay makes it available at once, with a new payload.
        await bus.retry(c, 0, payload={"try": 2})
        (again,) = await bus.claim("deliver", 10)
        assert again.job.payload == {"try": 2}
        assert again.attempts == 2

    run(main)


def test_retry_delay_lapses(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("deliver", Job("M1"))
        (c,) = await bus.claim("deliver", 10)
        await bus.retry(c, 0.05)
        await asyncio.sleep(0.12)
        assert [x.id for x in await bus.claim("deliver", 10)] == [c.id]

    run(main)


def test_delayed_publish(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("notify", Job("M1"), delay=LONG)
        assert await bus.claim("notify", 10) == []
        assert await bus.depths() == {"notify": 1}

    run(main)


def test_settle_removes_the_job_and_publishes_successors(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("route", Job("M1", {"a": 1}))
        (c,) = await bus.claim("route", 10)
        await bus.settle(
            c,
            [
                Publish("sign", Job("M1", {"b": 2})),
                Publish("notify", Job("M1"), delay=LONG),
            ],
        )
        assert await bus.depths() == {"sign": 1, "notify": 1}
        (nxt,) = await bus.claim("sign", 10)
        assert nxt.job == Job("M1", {"b": 2})
        assert await bus.claim("notify", 10) == []
        await bus.settle(nxt, [])
        assert await bus.depths() == {"notify": 1}

    run(main)


def test_settle_is_atomic(bus_db: Database) -> None:
    # The job's removal, the successors and the caller's own writes commit together or
    # not at all: nothing is lost, nothing published twice.
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    def fail(c: sqlite3.Connection) -> None:
        raise RuntimeError("record failed")

    async def main() -> None:
        await bus.publish("route", Job("M1"))
        (c,) = await bus.claim("route", 10)
        with pytest.raises(RuntimeError):
            await bus.settle(c, [Publish("sign", Job("M1"))], writes=[fail])
        assert await bus.depths() == {"route": 1}
        assert await bus.claim("sign", 10) == []

    run(main)


def test_publish_with_a_failing_write_publishes_nothing(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    def fail(c: sqlite3.Connection) -> None:
        raise RuntimeError("no")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await bus.publish("route", Job("M1"), writes=[fail])
        assert await bus.depths() == {}

    run(main)


def test_over_bound_at_the_bound(bus_db: Database) -> None:
    # Admission control (docs/architecture.md): at the bound the intake answers 451 4.3.2. The bound is
    # on the work ready for the stages in every queue; deferred retries do not count.
    bus = EmbeddedBus(bus_db, bound=3, lease=LONG)

    async def main() -> None:
        await bus.publish("intake", Job("M0"))
        await bus.publish("deliver", Job("M1"))
        await bus.publish("deliver", Job("M9"), delay=3600)  # a retry an hour away
        assert not await bus.over_bound("intake")
        await bus.publish("intake", Job("M2"))
        assert await bus.over_bound("intake"), "two in intake and one in deliver are ready"
        (c, *_) = await bus.claim("intake", 1)
        await bus.settle(c, [])
        assert not await bus.over_bound("intake")
        bus._depths_at = 0  # force a recount from the store: the same answer
        assert not await bus.over_bound("intake")

    run(main)


def test_depths_counts_every_queue(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        assert await bus.depths() == {}
        for q in ("route", "route", "sign"):
            await bus.publish(q, Job("M"))
        await bus.claim("route", 1)  # claimed jobs are still queued work
        assert await bus.depths() == {"route": 2, "sign": 1}

    run(main)


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.sqlite"
    first = Database(path)
    first.open(BUS_SCHEMA)
    asyncio.run(EmbeddedBus(first, bound=10, lease=LONG).publish("route", Job("M1", {"x": 1})))
    first.close()
    second = Database(path)
    second.open(BUS_SCHEMA)
    try:
        claimed = asyncio.run(EmbeddedBus(second, bound=10, lease=LONG).claim("route", 10))
        assert [c.job for c in claimed] == [Job("M1", {"x": 1})]
    finally:
        second.close()


def test_wait_wakes_on_publish(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        waiter = asyncio.create_task(bus.wait("route", LONG))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await bus.publish("route", Job("M1"))
        await asyncio.wait_for(waiter, 10)

    run(main)


def test_wait_returns_when_a_job_is_due(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=LONG)

    async def main() -> None:
        await bus.publish("route", Job("M1"))
        await asyncio.wait_for(bus.wait("route", LONG), 10)

    run(main)


def test_over_bound_when_work_waits_too_long(bus_db: Database) -> None:
    # Admission by queueing delay: a job left waiting longer than max_wait closes the
    # intake even far below the count bound; a job in a worker's hands does not count.
    bus = EmbeddedBus(bus_db, bound=1000, lease=LONG, max_wait=0.05)

    async def main() -> None:
        await bus.publish("sign", Job("M0"))
        bus._depths_at = 0
        assert not await bus.over_bound("route")
        await asyncio.sleep(0.1)
        bus._depths_at = 0
        assert await bus.over_bound("route"), "waited 0.1 s for a worker, more than 0.05"
        await bus.claim("sign", 1)
        bus._depths_at = 0
        assert not await bus.over_bound("route"), "claimed: being worked on"

    run(main)


def test_a_lapsed_claim_cannot_touch_the_job_that_replaced_it(bus_db: Database) -> None:
    # A worker whose lease ran out must not renew, settle or retry the job after another
    # worker claimed it — nor the job that got the same id (ids are never reused).
    bus = EmbeddedBus(bus_db, bound=100, lease=0.05)

    async def main() -> None:
        await bus.publish("sign", Job("M0"))
        (slow,) = await bus.claim("sign", 1)
        await asyncio.sleep(0.1)
        (fresh,) = await bus.claim("sign", 1)
        assert fresh.id == slow.id and fresh.token != slow.token
        await bus.settle(slow, [Publish("deliver", Job("M0"))])  # too late: ignored
        assert await bus.depths() == {"sign": 1}
        await bus.settle(fresh, [Publish("deliver", Job("M0"))])
        (nxt,) = await bus.claim("deliver", 1)
        assert nxt.id != fresh.id, "AUTOINCREMENT: a new job never takes a finished job's id"
        await bus.renew([fresh])  # the old claim's renewal does not lease the new job
        assert await bus.depths() == {"deliver": 1}

    run(main)
