"""The contract every bus keeps (`secumail.pipeline.bus.Bus`), run against each one.

docs/architecture.md: the stage queues deliver each job at least once, under a lease; a stage's
effects (store writes) become durable with the queue change that records it done; each
queue has an admission bound. Adding a bus means implementing the Protocol and passing
these tests (`conftest.WORLDS`). No assertion depends on how fast the machine is: leases
and delays that must lapse are short and polled for, those that must not are an hour.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from secumail.pipeline.bus import Job, Publish
from tests.contract.conftest import LONG, BusWorld

SHORT = 0.05  # a lease or delay that the test waits out
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Call `probe` until it answers something true, and return that; fail the test
    after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (answer := await probe()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
    return answer


def fail(c: sqlite3.Connection) -> None:
    raise RuntimeError("the store refused the write")


# -- publish and claim --------------------------------------------------------------------
def test_a_published_job_is_claimed_with_its_payload(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("route", Job("M1", {"rcpt": ["bob@example.test"], "n": "ö", "k": 1}))
        assert await bus.claim("sign", 10) == [], "queues are separate"
        (got,) = await bus.claim("route", 10)
        assert (got.queue, got.job.message_id, got.attempts) == ("route", "M1", 1)
        assert got.job.payload == {"rcpt": ["bob@example.test"], "n": "ö", "k": 1}

    bus_factory.run(main)


def test_claim_takes_at_most_the_limit_oldest_first(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        for i in range(5):
            await bus.publish("route", Job(f"M{i}"))
        first = await bus.claim("route", 2)
        rest = await bus.claim("route", 10)
        assert [c.job.message_id for c in first] == ["M0", "M1"]
        assert [c.job.message_id for c in rest] == ["M2", "M3", "M4"]
        assert await bus.claim("route", 10) == []

    bus_factory.run(main)


def test_a_claimed_job_is_invisible_to_every_claimer_while_leased(bus_factory: BusWorld) -> None:
    async def main() -> None:
        mine, other = await bus_factory.bus(), await bus_factory.bus()
        await mine.publish("route", Job("M1"))
        assert len(await mine.claim("route", 10)) == 1
        assert await other.claim("route", 10) == [], "another worker"
        assert await mine.claim("route", 10) == [], "this worker again"
        assert await other.depths() == {"route": 1}, "still queued, only leased"

    bus_factory.run(main)


def test_a_lapsed_lease_lets_another_worker_claim_the_job(bus_factory: BusWorld) -> None:
    # At-least-once: a worker that dies mid-job loses nothing; the job comes back.
    async def main() -> None:
        dying, other = await bus_factory.bus(lease=SHORT), await bus_factory.bus()
        await dying.publish("route", Job("M1", {"a": 1}))
        (first,) = await dying.claim("route", 10)
        (again,) = await eventually(lambda: other.claim("route", 10))
        assert (again.job.message_id, again.job.payload) == ("M1", {"a": 1})
        assert (first.attempts, again.attempts) == (1, 2)

    bus_factory.run(main)


def test_renew_keeps_a_job_from_other_workers(bus_factory: BusWorld) -> None:
    async def main() -> None:
        short, renewing = await bus_factory.bus(lease=SHORT), await bus_factory.bus()
        other = await bus_factory.bus()
        await short.publish("deliver", Job("kept"))
        await short.publish("deliver", Job("lapsed"))
        kept, _lapsed = await short.claim("deliver", 2)
        await renewing.renew([kept])  # for the renewing bus's lease: an hour
        back = await eventually(lambda: other.claim("deliver", 10))
        assert [c.job.message_id for c in back] == ["lapsed"]
        assert await other.claim("deliver", 10) == []

    bus_factory.run(main)


# -- settle ---------------------------------------------------------------------------------
def test_settle_removes_the_job_and_queues_what_follows_with_the_writes(
    bus_factory: BusWorld,
) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("route", Job("M1", {"a": 1}))
        (c,) = await bus.claim("route", 10)
        then = [
            Publish("sign", Job("M1", {"b": 2})),
            Publish("notify", Job("M1", {"kind": "delayed"}), delay=LONG),
        ]
        writes = [bus_factory.mark("routed"), bus_factory.mark("planned")]
        assert await bus.settle(c, then, writes) is True
        assert await bus_factory.marked() == ["routed", "planned"]
        assert await bus.depths() == {"sign": 1, "notify": 1}
        assert await bus.claim("route", 10) == []
        (nxt,) = await bus.claim("sign", 10)
        assert (nxt.job.message_id, nxt.job.payload, nxt.attempts) == ("M1", {"b": 2}, 1)
        assert await bus.claim("notify", 10) == [], "published with a delay"
        assert await bus.settle(nxt, []) is True
        assert await bus.depths() == {"notify": 1}

    bus_factory.run(main)


def test_a_failing_write_leaves_the_settled_job_and_its_followers_as_they_were(
    bus_factory: BusWorld,
) -> None:
    # Nothing lost, nothing published twice: the writes and the queue change go together.
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("route", Job("M1"))
        (c,) = await bus.claim("route", 10)
        with pytest.raises(RuntimeError):
            await bus.settle(c, [Publish("sign", Job("M1"))], [bus_factory.mark("x"), fail])
        assert await bus_factory.marked() == []
        assert await bus.depths() == {"route": 1}
        assert await bus.claim("sign", 10) == []
        assert await bus.settle(c, [Publish("sign", Job("M1"))]) is True, "the claim holds"
        assert await bus.depths() == {"sign": 1}

    bus_factory.run(main)


def test_a_stale_claim_changes_no_queue_but_its_writes_are_kept(bus_factory: BusWorld) -> None:
    # A worker whose lease ran out while it delivered: the worker that holds the job now
    # must find the delivery recorded, and the job must stay with it.
    async def main() -> None:
        slow, taker = await bus_factory.bus(lease=SHORT), await bus_factory.bus()
        await slow.publish("deliver", Job("M1"))
        (stale,) = await slow.claim("deliver", 1)
        (fresh,) = await eventually(lambda: taker.claim("deliver", 1))
        done = [Publish("notify", Job("M1"))]
        assert await slow.settle(stale, done, [bus_factory.mark("delivered")]) is False
        assert await bus_factory.marked() == ["delivered"]
        assert await taker.depths() == {"deliver": 1}
        assert await taker.claim("notify", 10) == []
        assert await taker.settle(fresh, done) is True
        assert await taker.depths() == {"notify": 1}

    bus_factory.run(main)


def test_a_stale_claim_can_neither_retry_nor_renew(bus_factory: BusWorld) -> None:
    async def main() -> None:
        short, later = await bus_factory.bus(lease=SHORT), await bus_factory.bus(lease=SHORT)
        renewing, last = await bus_factory.bus(), await bus_factory.bus()
        await short.publish("sign", Job("M1"))
        (stale,) = await short.claim("sign", 1)
        (fresh,) = await eventually(lambda: later.claim("sign", 1))
        # Had either taken effect, the job would be hidden or leased for an hour.
        assert await renewing.retry(stale, LONG) is False
        await renewing.renew([stale])
        (third,) = await eventually(lambda: last.claim("sign", 1))
        assert (fresh.attempts, third.attempts) == (2, 3)

    bus_factory.run(main)


# -- retry ----------------------------------------------------------------------------------
def test_retry_hides_the_job_for_its_delay_and_may_replace_the_payload(
    bus_factory: BusWorld,
) -> None:
    async def main() -> None:
        bus, other = await bus_factory.bus(), await bus_factory.bus()
        await bus.publish("deliver", Job("later", {"try": 1}))
        await bus.publish("deliver", Job("soon", {"try": 1}))
        later, soon = await bus.claim("deliver", 2)
        assert await bus.retry(later, LONG) is True
        assert await bus.retry(soon, SHORT, {"try": 2}) is True
        (back,) = await eventually(lambda: other.claim("deliver", 10))
        assert (back.job.message_id, back.job.payload, back.attempts) == ("soon", {"try": 2}, 2)
        assert await other.claim("deliver", 10) == [], "an hour away"
        assert await other.depths() == {"deliver": 2}

    bus_factory.run(main)


def test_retry_without_a_payload_keeps_it(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("deliver", Job("M1", {"mx": "a.example.test"}))
        (c,) = await bus.claim("deliver", 1)
        assert await bus.retry(c, 0) is True
        (back,) = await eventually(lambda: bus.claim("deliver", 1))
        assert back.job.payload == {"mx": "a.example.test"}

    bus_factory.run(main)


# -- publish with writes, and already claimed -----------------------------------------------
def test_publish_commits_its_writes_with_the_job(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("route", Job("M1"), writes=[bus_factory.mark("accepted")])
        assert await bus_factory.marked() == ["accepted"]
        with pytest.raises(RuntimeError):
            await bus.publish("route", Job("M2"), writes=[bus_factory.mark("M2"), fail])
        assert await bus_factory.marked() == ["accepted"]
        assert [c.job.message_id for c in await bus.claim("route", 10)] == ["M1"]

    bus_factory.run(main)


def test_a_job_published_claimed_is_held_by_the_publisher(bus_factory: BusWorld) -> None:
    # The intake hands a new job to the first stage in its own process.
    async def main() -> None:
        mine, other = await bus_factory.bus(), await bus_factory.bus()
        c = await mine.publish_claimed("route", Job("M1", {"x": 1}), [bus_factory.mark("in")])
        assert (c.queue, c.job.message_id, c.attempts) == ("route", "M1", 1)
        assert c.job.payload == {"x": 1}
        assert await bus_factory.marked() == ["in"]
        assert await other.depths() == {"route": 1}
        assert await other.claim("route", 10) == []
        assert await mine.settle(c, [Publish("sign", Job("M1"))]) is True
        assert await other.depths() == {"sign": 1}

    bus_factory.run(main)


def test_a_job_published_claimed_comes_back_when_its_holder_dies(bus_factory: BusWorld) -> None:
    async def main() -> None:
        dying, other = await bus_factory.bus(lease=SHORT), await bus_factory.bus()
        c = await dying.publish_claimed("route", Job("M1"))
        (again,) = await eventually(lambda: other.claim("route", 10))
        assert (again.job.message_id, again.attempts) == ("M1", 2)
        assert await dying.settle(c, []) is False
        assert await other.settle(again, []) is True
        assert await other.depths() == {}

    bus_factory.run(main)


def test_a_failing_write_publishes_nothing_claimed(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        with pytest.raises(RuntimeError):
            await bus.publish_claimed("route", Job("M1"), [fail])
        assert await bus.depths() == {}

    bus_factory.run(main)


# -- depths, admission, wait, close ---------------------------------------------------------
def test_depths_counts_the_jobs_of_every_queue(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        assert await bus.depths() == {}
        for q in ("route", "route", "sign"):
            await bus.publish(q, Job("M"))
        await bus.publish("notify", Job("M"), delay=LONG)
        await bus.claim("route", 1)  # claimed jobs are queued work all the same
        assert await bus.depths() == {"route": 2, "sign": 1, "notify": 1}

    bus_factory.run(main)


def test_admission_is_refused_at_the_bound_of_ready_work(bus_factory: BusWorld) -> None:
    # Admission control (docs/architecture.md): at the bound the intake answers 451 4.3.2 / 503. The
    # bound is on the work ready for the stages in every queue; retries waiting for their
    # time do not count (a recipient's MX being down does not close the door).
    async def main() -> None:
        bus = await bus_factory.bus(bound=3)
        await bus.publish("route", Job("M0"))
        await bus.publish("deliver", Job("M1"))
        await bus.publish("deliver", Job("M9"), delay=LONG)
        assert await bus.over_bound("route") is False
        await bus.publish("route", Job("M2"))
        await eventually(lambda: bus.over_bound("route"))
        (c,) = await bus.claim("route", 1)
        assert await bus.settle(c, []) is True

        async def open_again() -> bool:
            return not await bus.over_bound("route")

        await eventually(open_again)

    bus_factory.run(main)


def test_wait_returns_when_a_job_is_published(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        waiter = asyncio.create_task(bus.wait("route", LONG))
        await asyncio.sleep(0)
        await bus.publish("route", Job("M1"))
        await asyncio.wait_for(waiter, 10)
        assert len(await bus.claim("route", 10)) == 1

    bus_factory.run(main)


def test_wait_returns_when_a_delayed_job_comes_due(bus_factory: BusWorld) -> None:
    async def main() -> None:
        bus = await bus_factory.bus()
        await bus.publish("route", Job("M1"), delay=SHORT)
        await asyncio.wait_for(bus.wait("route", LONG), 10)
        await eventually(lambda: bus.claim("route", 10))

    bus_factory.run(main)


def test_jobs_stay_queued_when_a_bus_is_closed(bus_factory: BusWorld) -> None:
    async def main() -> None:
        first = await bus_factory.bus()
        await first.publish("route", Job("M1", {"x": 1}))
        await first.close()
        second = await bus_factory.bus()
        (c,) = await second.claim("route", 10)
        assert (c.job.message_id, c.job.payload) == ("M1", {"x": 1})

    bus_factory.run(main)
