"""The intake hands a new job straight to the first stage of its own process: the job is
written already claimed (no claim transaction) and handed over with the record and body
the stage would otherwise read back — yet it sits in the queue all along, so a process
that dies with it in hand loses nothing."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import pytest

from secumail.errors import ConflictError
from secumail.pipeline.bus import Claimed, Job, StageResult, Verdict
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.handoff import Handoff
from secumail.pipeline.intake import Intake
from secumail.pipeline.runner import StageRunner
from secumail.spool.body_store import BodyStore
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage
from tests.unit.pipeline_helpers import run_all, until

BODY = b"From: a@hospital.test\r\nTo: b@clinic.test\r\nSubject: x\r\n\r\nprivate\r\n"


class Parts:
    def __init__(self, db: Database, lease: float = 60.0) -> None:
        self.store = MetadataStore(db)
        self.bodies = BodyStore(db, os.urandom(32))
        self.bus = EmbeddedBus(db, bound=100, lease=lease)
        self.intake = Intake(self.store, self.bodies, self.bus, "route")
        self.claims: list[int] = []  # jobs the runner got through bus.claim
        claim = self.bus.claim

        async def counting_claim(queue: str, limit: int) -> list[Claimed]:
            got = await claim(queue, limit)
            self.claims += [c.id for c in got]
            return got

        self.bus.claim = counting_claim  # type: ignore[method-assign]


def new_message(i: int = 1, recipients: tuple[str, ...] = ("b@Clinic.TEST",)) -> NewMessage:
    return NewMessage(
        id=f"M{i}",
        account_id=None,
        mail_from="a@hospital.test",
        recipients=list(recipients),
        size=len(BODY),
        header_from="a@hospital.test",
        message_id_header="<m@hospital.test>",
        api_metadata={"case": "7"},
    )


class Recording:
    """A first stage that notes what it was handed, waiting for `gate` when set."""

    name = "route"
    verdicts = frozenset({Verdict.DONE})

    def __init__(self) -> None:
        self.seen: list[Job] = []
        self.memos: list[Handoff] = []
        self.gate: asyncio.Event | None = None

    async def handle(self, job: Job) -> StageResult:
        self.memos.append(replace(job.memo))
        self.seen.append(job)
        if self.gate is not None:
            await self.gate.wait()
        return StageResult.done()

    async def close(self) -> None:
        return None


def test_a_new_job_is_handled_here_with_what_the_store_would_give_back(gateway_db: Database) -> None:
    parts = Parts(gateway_db)
    stage = Recording()
    runner = StageRunner(stage, parts.bus, next_queue=None, concurrency=4)
    parts.intake.local = runner

    async def body() -> None:
        await parts.intake.accept(new_message(), BODY)
        await until(lambda: stage.seen)
        await until(lambda: runner.handled == 1 and not runner._in_hand)
        memo = stage.memos[0]
        stored = await parts.store.message("M1", history=False, event_kinds=("signed",))
        assert memo.record == stored, "the record handed over is the one stored"
        assert memo.body == BODY == await parts.bodies.get("M1")
        await asyncio.sleep(0.1)
        assert await parts.bus.depths() == {}, "settled: the job is gone"

    asyncio.run(run_all([runner], body))
    assert parts.claims == [], "no claim: the job came straight from the intake"
    assert [j.message_id for j in stage.seen] == ["M1"]


def test_a_process_that_dies_with_the_job_in_hand_loses_nothing(gateway_db: Database) -> None:
    """The job is in the queue under this process's lease: nobody else takes it while
    the lease holds; when it runs out (the process died), any worker claims it."""
    parts = Parts(gateway_db, lease=0.5)
    adopted: list[Claimed] = []

    class DiesAtOnce:
        def reserve(self) -> bool:
            return True

        def unreserve(self) -> None:
            raise AssertionError("the write did not fail")

        def adopt(self, claimed: Claimed) -> None:
            adopted.append(claimed)  # … and the process is gone

    parts.intake.local = DiesAtOnce()
    other = EmbeddedBus(gateway_db, bound=100, lease=60)  # another worker on the same file

    async def main() -> None:
        await parts.intake.accept(new_message(), BODY)
        (mine,) = adopted
        assert mine.queue == "route" and mine.job.message_id == "M1" and mine.attempts == 1
        assert await other.claim("route", 10) == [], "held under the first process's lease"
        assert await other.depths() == {"route": 1}, "but in the queue"
        await asyncio.sleep(0.6)
        (taken,) = await other.claim("route", 10)
        assert (taken.id, taken.job.message_id, taken.attempts) == (mine.id, "M1", 2)
        assert not await parts.bus.settle(mine, []), "the dead claim holds nothing any more"
        assert await other.settle(taken, [])

    asyncio.run(main())


def test_a_full_first_stage_leaves_new_jobs_to_the_queue(gateway_db: Database) -> None:
    parts = Parts(gateway_db)
    stage = Recording()
    runner = StageRunner(stage, parts.bus, next_queue=None, concurrency=1)
    parts.intake.local = runner

    async def body() -> None:
        for i in range(3):
            await parts.intake.accept(new_message(i), BODY)
        await until(lambda: stage.seen)
        await asyncio.sleep(0.1)
        assert [j.message_id for j in stage.seen] == ["M0"], "room for one"
        stage.gate.set()
        await until(lambda: len(stage.seen) == 3)
        await until(lambda: not runner._in_hand)

    async def main() -> None:
        stage.gate = asyncio.Event()
        await run_all([runner], body)
        assert await parts.bus.depths() == {}

    asyncio.run(main())
    assert sorted(j.message_id for j in stage.seen) == ["M0", "M1", "M2"]
    assert len(parts.claims) == 2, "the two that found no room came through the queue"
    assert stage.memos[0].body == BODY
    assert all(m.body is None for m in stage.memos[1:]), "those are read from the store"


def test_a_write_that_fails_gives_the_room_back(gateway_db: Database) -> None:
    parts = Parts(gateway_db)
    runner = StageRunner(Recording(), parts.bus, next_queue=None, concurrency=1)
    parts.intake.local = runner

    async def main() -> None:
        await parts.intake.accept(new_message(1), BODY)
        runner._in_hand.clear()  # as if handled: the runner has its one slot free again
        with pytest.raises(ConflictError):
            await parts.intake.accept(new_message(1), BODY)  # the same id again
        assert runner.reserve(), "the failed write did not keep the room"

    asyncio.run(main())


def test_a_stopping_runner_takes_no_new_jobs(gateway_db: Database) -> None:
    parts = Parts(gateway_db)
    runner = StageRunner(Recording(), parts.bus, next_queue=None, concurrency=4)
    parts.intake.local = runner

    async def main() -> None:
        await runner.stop(grace=0.1)
        await parts.intake.accept(new_message(), BODY)
        (job,) = await parts.bus.claim("route", 5)  # queued as usual, for the next process
        assert job.job.message_id == "M1" and job.attempts == 1

    asyncio.run(main())
