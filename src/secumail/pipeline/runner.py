"""Runs one stage: claims jobs from its queue, handles them concurrently, settles them.

Verdicts: CONTINUE publishes the job to the next stage in the configured list (in the
same transaction that removes it here); DONE and REJECT remove it; DEFER puts it back
with a delay. A handler that raises is logged and retried with backoff: a bug or an
outage delays a message, it never drops one. Leases of jobs in hand are renewed while
they run, so a slow delivery is not taken over by another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from secumail.errors import BusUnavailable
from secumail.pipeline.bus import Bus, Claimed, Job, Publish, StageResult, Verdict
from secumail.pipeline.payloads import notice
from secumail.pipeline.stage import Stage

log = logging.getLogger("secumail.pipeline")

ERROR_BACKOFF = (5.0, 30.0, 120.0, 600.0)
BUS_RETRY = 1.0  # seconds between claims while the bus cannot be reached


class StageContractError(RuntimeError):
    """A stage returned a verdict outside the set it declares (`Stage.verdicts`)."""


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        bus: Bus,
        *,
        next_queue: str | None,
        concurrency: int,
        reject_queue: str | None = None,
    ) -> None:
        self.stage = stage
        self.bus = bus
        self.queue = stage.name
        self.next_queue = next_queue
        self.reject_queue = reject_queue  # REJECT hands the job here (the notify stage)
        self.concurrency = concurrency
        self._in_hand: dict[int, Claimed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()  # set whenever a job in hand finishes
        self._stopping = asyncio.Event()
        self.handled = 0
        # The next stage, when it runs in this process: jobs are passed to it directly.
        self.successor: StageRunner | None = None
        # Room taken outside `_in_hand` (`reserve`): jobs of this stage handled inside
        # another stage's chain, and jobs promised to a publisher in this process.
        self._lent = 0
        self._down_since: float | None = None  # since when the bus has not answered

    async def run(self) -> None:
        renewer = asyncio.get_running_loop().create_task(self._renew_leases())
        try:
            while not self._stopping.is_set():
                free = self._free()
                if free <= 0:
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                try:
                    claimed = await self.bus.claim(self.queue, free)
                except BusUnavailable as exc:
                    await self._bus_down(exc)
                    continue
                if self._down_since is not None:
                    log.warning("stage %s: the bus answers again", self.queue)
                    self._down_since = None
                if not claimed:
                    waiter = asyncio.ensure_future(self.bus.wait(self.queue, 1.0))
                    stopper = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    for fut in (waiter, stopper):
                        fut.cancel()
                    continue
                for c in claimed:
                    self._start(c)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _bus_down(self, exc: BusUnavailable) -> None:
        """The bus cannot be reached: say so once, then try again each second (or stop)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("stage %s waits for the bus: %s", self.queue, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), BUS_RETRY)

    def _free(self) -> int:
        return self.concurrency - len(self._in_hand) - self._lent

    def _start(self, claimed: Claimed) -> None:
        self._in_hand[claimed.id] = claimed
        task = asyncio.get_running_loop().create_task(self._handle(claimed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- jobs handed over in this process (the chain, the intake) ----------------------
    def reserve(self) -> bool:
        """Take room for one job handed over in this process — by the stage before, to
        handle in its chain, or by a publisher (the intake) about to write it already
        claimed for this runner; False when there is none (it goes through the queue)."""
        if self._stopping.is_set() or self._free() <= 0:
            return False
        self._lent += 1
        return True

    def unreserve(self) -> None:
        """Give the room back (the chained job is done, or the promised one was not
        written after all)."""
        self._lent -= 1
        self._freed.set()

    def adopt(self, claimed: Claimed) -> None:
        """The promised job, written claimed under this runner's lease: handle it now.
        Stopping meanwhile, it is left to its lease (it runs after the restart)."""
        if self._stopping.is_set():
            self.unreserve()
            return
        self._lent -= 1  # the room passes to the job in hand
        self._start(claimed)

    async def _handle(self, claimed: Claimed) -> None:
        try:
            await self._settle(claimed)
        finally:
            self._in_hand.pop(claimed.id, None)
            self._freed.set()

    async def _settle(self, claimed: Claimed) -> None:
        job = claimed.job
        try:
            result = await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged with its traceback and retried
            delay = ERROR_BACKOFF[min(claimed.attempts, len(ERROR_BACKOFF)) - 1]
            self._log_failure(job, claimed.attempts, delay)
            await self.bus.retry(claimed, delay)
            return
        if result.verdict is Verdict.DEFER:
            await self.bus.retry(claimed, result.delay, result.payload)
            return
        then = await self._after(job, result)
        # What a stage of the chain left to be written with the settling (Job.memo).
        writes = job.memo.take_writes()
        if not await self.bus.settle(claimed, then, writes):
            # The lease ran out while we worked and another worker has the job now; its
            # stages are idempotent, so it finishes the work without a second message —
            # once it finds what was done here (a delivery, its evidence) written: the
            # bus commits a stale claim's writes all the same (the `Bus` contract).
            log.warning(
                "stage %s message %s: lease lapsed, another worker took over",
                self.queue,
                job.message_id,
            )

    async def _run(self, job: Job) -> StageResult:
        started = time.monotonic()
        result = await self.stage.handle(job)
        if result.verdict not in self.stage.verdicts:
            # A stage answering outside its declared set is a bug: retried like one.
            raise StageContractError(
                f"stage {self.queue} answered {result.verdict.value}, not one of its"
                f" verdicts ({', '.join(sorted(v.value for v in self.stage.verdicts))})"
            )
        self.handled += 1
        log.debug(
            "stage %s message %s: %s in %.1f ms",
            self.queue,
            job.message_id,
            result.verdict.value,
            (time.monotonic() - started) * 1000,
        )
        return result

    async def _after(self, job: Job, result: StageResult) -> list[Publish]:
        """What follows this stage's (non-DEFER) verdict on `job`, as the jobs to publish
        when the claimed job is settled. When the next stage runs in this process and has
        room, it handles the job right here instead of through its queue (one claim, one
        settle and no wake-up for the whole chain); the claimed job stays leased until the
        chain ends, so a crash on the way repeats the chain from its start (stages are
        idempotent), and whatever the chained stage defers goes to its own queue."""
        if result.verdict is Verdict.CONTINUE and self.next_queue is not None:
            if result.payload is not None:
                job.payload = result.payload
            nxt = self.successor
            if nxt is None or not nxt.reserve():
                return [Publish(self.next_queue, job)]
            try:
                try:
                    chained = await nxt._run(job)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - logged with its traceback and retried
                    nxt._log_failure(job, 1, ERROR_BACKOFF[0])
                    return [Publish(nxt.queue, job, ERROR_BACKOFF[0])]
                if chained.verdict is Verdict.DEFER:
                    if chained.payload is not None:
                        job.payload = chained.payload
                    return [Publish(nxt.queue, job, chained.delay)]
                return await nxt._after(job, chained)
            finally:
                nxt.unreserve()
        if result.verdict is Verdict.REJECT and self.reject_queue not in (None, self.queue):
            job.payload = notice("failed")
            return [Publish(self.reject_queue, job)]
        return []

    def _log_failure(self, job: Job, attempt: int, delay: float) -> None:
        log.exception(
            "stage %s failed on message %s (attempt %d); retrying in %.0fs",
            self.queue,
            job.message_id,
            attempt,
            delay,
        )

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.bus.lease / 3))
            try:
                await self.bus.renew(list(self._in_hand.values()))
            except Exception:
                log.exception("cannot renew leases of stage %s", self.queue)

    async def stop(self, grace: float) -> None:
        """Stop claiming; give jobs in hand `grace` seconds, then cancel them (leases lapse)."""
        self._stopping.set()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            unfinished = list(self._in_hand.values())
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
            for claimed in unfinished:
                # Hand back at once rather than let the lease run out.
                await self.bus.retry(claimed, 0)
