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

from secumail.pipeline.bus import Claimed, Publish, Verdict
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.stage import Stage

log = logging.getLogger("secumail.pipeline")

ERROR_BACKOFF = (5.0, 30.0, 120.0, 600.0)


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        bus: EmbeddedBus,
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

    async def run(self) -> None:
        renewer = asyncio.get_running_loop().create_task(self._renew_leases())
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._in_hand)
                if free <= 0:
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                claimed = await self.bus.claim(self.queue, free)
                if not claimed:
                    waiter = asyncio.ensure_future(self.bus.wait(self.queue, 1.0))
                    stopper = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    for fut in (waiter, stopper):
                        fut.cancel()
                    continue
                for c in claimed:
                    self._in_hand[c.id] = c
                    task = asyncio.get_running_loop().create_task(self._handle(c))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _handle(self, claimed: Claimed) -> None:
        try:
            await self._settle(claimed)
        finally:
            self._in_hand.pop(claimed.id, None)
            self._freed.set()

    async def _settle(self, claimed: Claimed) -> None:
        started = time.monotonic()
        try:
            result = await self.stage.handle(claimed.job)
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = ERROR_BACKOFF[min(claimed.attempts, len(ERROR_BACKOFF)) - 1]
            log.exception(
                "stage %s failed on message %s (attempt %d); retrying in %.0fs",
                self.queue,
                claimed.job.message_id,
                claimed.attempts,
                delay,
            )
            await self.bus.retry(claimed, delay)
            return
        self.handled += 1
        settled = True
        if result.verdict is Verdict.CONTINUE and self.next_queue is not None:
            job = claimed.job
            if result.payload is not None:
                job.payload = result.payload
            settled = await self.bus.settle(claimed, [Publish(self.next_queue, job)])
        elif result.verdict is Verdict.DEFER:
            await self.bus.retry(claimed, result.delay, result.payload)
        elif result.verdict is Verdict.REJECT and self.reject_queue not in (None, self.queue):
            job = claimed.job
            job.payload = {"kind": "failed"}
            settled = await self.bus.settle(claimed, [Publish(self.reject_queue, job)])
        else:
            settled = await self.bus.settle(claimed, [])
        if not settled:
            # The lease ran out while we worked and another worker has the job now; its
            # stages are idempotent, so it finishes the work without a second message.
            log.warning(
                "stage %s message %s: lease lapsed, another worker took over",
                self.queue,
                claimed.job.message_id,
            )
        log.debug(
            "stage %s message %s: %s in %.1f ms",
            self.queue,
            claimed.job.message_id,
            result.verdict.value,
            (time.monotonic() - started) * 1000,
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
