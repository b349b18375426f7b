"""The stage runner: claims, handles, settles — and passes a job straight on to the next
stage when that stage runs in the same process (one claim and one settle per chain),
while what a chained stage defers or fails on still goes through its own queue."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from secumail.errors import BusUnavailable
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.runner import StageRunner
from secumail.store.database import Database
from tests.unit.pipeline_helpers import run_all, until


class CountingBus(EmbeddedBus):
    """The embedded bus, noting which queues jobs were claimed from and settled in."""

    def __init__(self, bus_db: Database) -> None:
        super().__init__(bus_db, bound=100, lease=60)
        self.claimed_from: list[str] = []
        self.settled_in: list[str] = []

    async def claim(self, queue: str, limit: int):
        got = await super().claim(queue, limit)
        self.claimed_from += [queue] * len(got)
        return got

    async def settle(self, claimed, then, writes=()):
        self.settled_in.append(claimed.queue)
        return await super().settle(claimed, then, writes)


class Scripted:
    """A stage that answers from a script per message and records what it saw."""

    def __init__(
        self,
        name: str,
        answers: dict[str, StageResult] | None = None,
        verdicts: frozenset[Verdict] = frozenset(Verdict),
    ) -> None:
        self.name = name
        self.verdicts = verdicts
        self.answers = answers or {}
        self.seen: list[tuple[str, dict]] = []
        self.fail_for: set[str] = set()

    async def handle(self, job: Job) -> StageResult:
        self.seen.append((job.message_id, dict(job.payload)))
        if job.message_id in self.fail_for:
            raise RuntimeError("stage bug")
        return self.answers.get(job.message_id, StageResult.go_on())

    async def close(self) -> None:
        return None


def runners(bus: EmbeddedBus, stages: list[Scripted], *, chain: bool) -> list[StageRunner]:
    out = []
    for i, stage in enumerate(stages):
        nxt = stages[i + 1].name if i + 1 < len(stages) else None
        out.append(StageRunner(stage, bus, next_queue=nxt, concurrency=8, reject_queue="notify"))
    if chain:
        for a, b in itertools.pairwise(out):
            a.successor = b
    return out


def test_a_chain_in_one_process_takes_one_claim_and_one_settle(bus_db: Database) -> None:
    bus = CountingBus(bus_db)
    route, sign, deliver = Scripted("route"), Scripted("sign"), Scripted("deliver")
    deliver.answers["M1"] = StageResult.done()
    route.answers["M1"] = StageResult.go_on({"planned": True})

    async def main() -> None:
        rs = runners(bus, [route, sign, deliver], chain=True)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: bus.settled_in)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {}

    asyncio.run(main())
    # one claim and one settle for the whole chain: nothing passed through the sign or
    # deliver queues.
    assert bus.claimed_from == ["route"] and bus.settled_in == ["route"]
    assert [m for m, _ in route.seen + sign.seen + deliver.seen] == ["M1"] * 3
    assert sign.seen[0][1] == {"planned": True}, "a stage's payload travels down the chain"


def test_without_chaining_every_hop_goes_through_its_queue(bus_db: Database) -> None:
    bus = CountingBus(bus_db)
    route, sign, deliver = Scripted("route"), Scripted("sign"), Scripted("deliver")
    deliver.answers["M1"] = StageResult.done()

    async def main() -> None:
        rs = runners(bus, [route, sign, deliver], chain=False)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: len(bus.settled_in) == 3)
            await asyncio.sleep(0.1)

        await run_all(rs, body)

    asyncio.run(main())
    assert bus.claimed_from == bus.settled_in == ["route", "sign", "deliver"]
    assert [m for m, _ in deliver.seen] == ["M1"]


def test_what_a_chained_stage_defers_waits_in_that_stages_queue(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    route, sign, deliver = Scripted("route"), Scripted("sign"), Scripted("deliver")
    deliver.answers["M1"] = StageResult.defer(3600, "MX down", payload={"round": 2})

    async def main() -> None:
        rs = runners(bus, [route, sign, deliver], chain=True)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: deliver.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {"deliver": 1}, "deferred in deliver, not in route"
        assert await bus.claim("deliver", 5) == [], "not before the delay"
        assert await bus.next_due("deliver") > asyncio.get_running_loop().time()

    asyncio.run(main())
    assert len(route.seen) == len(sign.seen) == len(deliver.seen) == 1


def test_a_chained_stage_that_fails_is_retried_from_its_own_queue(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    route, sign, deliver = Scripted("route"), Scripted("sign"), Scripted("deliver")
    sign.fail_for.add("M1")

    async def main() -> None:
        rs = runners(bus, [route, sign, deliver], chain=True)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: sign.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {"sign": 1}, "kept, in the failing stage's queue"

    asyncio.run(main())
    assert len(route.seen) == 1 and deliver.seen == []


def test_a_verdict_outside_the_stages_declared_set_is_a_bug_the_job_is_kept(
    bus_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A stage declares the verdicts it may return (`Stage.verdicts`); one that answers
    otherwise is treated like a stage that raised: logged and retried, never passed on."""
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    route = Scripted("route")
    sign = Scripted("sign", verdicts=frozenset({Verdict.CONTINUE}))
    deliver = Scripted("deliver")
    sign.answers["M1"] = StageResult.reject("not a verdict sign may give here")

    async def main() -> None:
        rs = runners(bus, [route, sign, deliver], chain=True)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: sign.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {"sign": 1}, "kept in the stage's queue for a retry"

    with caplog.at_level("ERROR", logger="secumail.pipeline"):
        asyncio.run(main())
    assert deliver.seen == [], "nothing passed on"
    assert any(
        "answered reject, not one of its verdicts (continue)" in r.getMessage()
        or "answered reject, not one of its verdicts (continue)" in (r.exc_text or "")
        for r in caplog.records
    )


def test_a_rejected_message_goes_to_notify(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    route, sign = Scripted("route"), Scripted("sign")
    sign.answers["M1"] = StageResult.reject("no DKIM key")

    async def main() -> None:
        rs = runners(bus, [route, sign], chain=True)
        await bus.publish("route", Job("M1"))

        async def body() -> None:
            await until(lambda: sign.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        (job,) = await bus.claim("notify", 5)
        assert job.job.payload == {"kind": "failed"}

    asyncio.run(main())


def test_a_full_next_stage_gets_the_job_through_its_queue(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    gate = asyncio.Event()

    class Slow(Scripted):
        async def handle(self, job: Job) -> StageResult:
            self.seen.append((job.message_id, {}))
            await gate.wait()
            return StageResult.done()

    route, sign = Scripted("route"), Slow("sign")

    async def main() -> None:
        rs = runners(bus, [route, sign], chain=True)
        rs[1].concurrency = 1
        for i in range(3):
            await bus.publish("route", Job(f"M{i}"))

        async def body() -> None:
            await until(lambda: len(sign.seen) >= 1)
            await asyncio.sleep(0.2)
            # sign has room for one: the others wait in its queue, not in route's hands
            assert len(sign.seen) == 1
            assert (await bus.depths()).get("sign") == 2
            gate.set()
            await until(lambda: len(sign.seen) == 3)

        await run_all(rs, body)

    asyncio.run(main())
    assert sorted(m for m, _ in sign.seen) == ["M0", "M1", "M2"]


class LeavesWrites(Scripted):
    """Like the sign stage: leaves a store write to be committed with what follows."""

    async def handle(self, job: Job) -> StageResult:
        def mark(c) -> None:
            c.execute("CREATE TABLE IF NOT EXISTS marks (message_id TEXT)")
            c.execute("INSERT INTO marks VALUES (?)", (job.message_id,))

        job.memo.writes = [mark]
        return await super().handle(job)


def _marks(db: Database) -> list[str]:
    return db.read_sync(
        lambda c: (
            [r[0] for r in c.execute("SELECT message_id FROM marks")]
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'marks'").fetchone()
            else []
        )
    )


@pytest.mark.parametrize("chain", [True, False])
def test_writes_a_stage_leaves_are_committed_when_the_next_stage_fails(
    bus_db: Database, chain: bool
) -> None:
    """What the sign stage leaves to be written with what follows is written even when
    the next stage fails (chained or through the queue): its job is queued for a retry
    and finds what signing stored."""
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    sign, deliver = LeavesWrites("sign"), Scripted("deliver")
    deliver.fail_for.add("M1")

    async def main() -> None:
        rs = runners(bus, [sign, deliver], chain=chain)
        await bus.publish("sign", Job("M1"))

        async def body() -> None:
            await until(lambda: deliver.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {"deliver": 1}

    asyncio.run(main())
    assert _marks(bus_db) == ["M1"]


def test_writes_a_stage_leaves_are_dropped_when_it_fails_itself(bus_db: Database) -> None:
    bus = EmbeddedBus(bus_db, bound=100, lease=60)
    sign = LeavesWrites("sign")
    sign.fail_for.add("M1")

    async def main() -> None:
        rs = runners(bus, [sign, Scripted("deliver")], chain=True)
        await bus.publish("sign", Job("M1"))

        async def body() -> None:
            await until(lambda: sign.seen)
            await asyncio.sleep(0.1)

        await run_all(rs, body)
        assert await bus.depths() == {"sign": 1}, "retried from the start"

    asyncio.run(main())
    assert _marks(bus_db) == []


def test_writes_are_kept_when_the_lease_lapsed_meanwhile(bus_db: Database) -> None:
    """A worker whose lease ran out while it delivered still writes what it did (the
    delivery, its evidence): the worker that took the job over must find it."""
    bus = EmbeddedBus(bus_db, bound=100, lease=0.05)  # lapses before the first renewal
    other = EmbeddedBus(bus_db, bound=100, lease=60)  # another worker on the same file
    taken_over: list[object] = []

    class SlowDeliver(LeavesWrites):
        async def handle(self, job: Job) -> StageResult:
            while not taken_over:
                taken_over.extend(await other.claim("deliver", 1))
                await asyncio.sleep(0.01)
            return await super().handle(job)

    deliver = SlowDeliver("deliver")
    deliver.answers["M1"] = StageResult.done()

    async def main() -> None:
        rs = runners(bus, [deliver], chain=True)
        await bus.publish("deliver", Job("M1"))

        async def body() -> None:
            await until(lambda: _marks(bus_db))

        await run_all(rs, body)
        assert await bus.depths() == {"deliver": 1}, "the other worker still has the job"

    asyncio.run(main())
    assert _marks(bus_db) == ["M1"]


class FlakyBus(EmbeddedBus):
    """The embedded bus whose queues cannot be reached for the first `down` claims."""

    def __init__(self, bus_db: Database, down: int) -> None:
        super().__init__(bus_db, bound=100, lease=60)
        self.down = down

    async def claim(self, queue: str, limit: int):
        if self.down > 0:
            self.down -= 1
            raise BusUnavailable("bus.url nats://127.0.0.1:1: cannot connect")
        return await super().claim(queue, limit)


def test_a_stage_waits_for_a_bus_that_cannot_be_reached_and_goes_on(
    bus_db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS down (at start or for a while): the runner neither dies nor spins; it says so
    once, tries again, and handles the work once the bus answers."""
    monkeypatch.setattr("secumail.pipeline.runner.BUS_RETRY", 0.01)
    bus = FlakyBus(bus_db, down=3)
    stage = Scripted("deliver", {"M1": StageResult.done()})
    [runner] = runners(bus, [stage], chain=False)

    async def body() -> None:
        await bus.publish("deliver", Job("M1"))
        await until(lambda: [m for m, _p in stage.seen] == ["M1"])

    asyncio.run(run_all([runner], body))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("waits for the bus" in m for m in messages) == 1
    assert sum("the bus answers again" in m for m in messages) == 1
