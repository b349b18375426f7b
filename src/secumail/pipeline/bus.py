"""The bus between stages: named durable queues with at-least-once delivery.

A job is claimed with a lease; the worker that holds it renews the lease while it works
(`renew`) and, when done, settles it: removes it and publishes what follows, in one step.
A worker that dies lets its lease run out and the job is claimed again. Stages are
therefore idempotent: their effects are recorded so a repeated job does no harm.

`Bus` below is the whole contract; the runner, the intake and the stages know nothing
else. The embedded bus (`embedded_bus.py`, SQLite) is one implementation; another one
(the scale-out deployment's NATS JetStream bus) implements the same Protocol and passes
the same contract tests (`tests/contract/`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from secumail.pipeline.handoff import Handoff
from secumail.store.database import Op


@dataclass(slots=True)
class Job:
    message_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    # What a stage already has in hand for the next one when the runner chains them in one
    # process, and the store writes it left to commit with what follows (`Handoff`).
    # Never stored, never sent on the bus.
    memo: Handoff = field(default_factory=Handoff, repr=False, compare=False)

    def encode(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"))


@dataclass(slots=True)
class Claimed:
    """A job held under lease by this worker."""

    id: int
    queue: str
    job: Job
    attempts: int
    token: str = ""  # proves this claim still holds the job


@dataclass(frozen=True, slots=True)
class Publish:
    queue: str
    job: Job
    delay: float = 0.0


class Verdict(enum.Enum):
    """What a stage decided about a job: the closed set of outcomes (each stage declares
    the ones it may give in `Stage.verdicts`)."""

    CONTINUE = "continue"  # pass the job on to the next stage
    DONE = "done"  # nothing further to do
    DEFER = "defer"  # try this stage again after a delay
    REJECT = "reject"  # the message is refused; the stage has recorded why


@dataclass(frozen=True, slots=True)
class StageResult:
    verdict: Verdict
    delay: float = 0.0
    reason: str = ""
    payload: dict[str, Any] | None = None  # replaces the job's payload when passed on

    @classmethod
    def go_on(cls, payload: dict[str, Any] | None = None) -> StageResult:
        return cls(Verdict.CONTINUE, payload=payload)

    @classmethod
    def done(cls, reason: str = "") -> StageResult:
        return cls(Verdict.DONE, reason=reason)

    @classmethod
    def defer(
        cls, delay: float, reason: str = "", payload: dict[str, Any] | None = None
    ) -> StageResult:
        return cls(Verdict.DEFER, delay=delay, reason=reason, payload=payload)

    @classmethod
    def reject(cls, reason: str) -> StageResult:
        return cls(Verdict.REJECT, reason=reason)


# Store writes left to be committed with a queue change: functions of the metadata
# store's connection, like the store's own `*_op` functions.
StoreWrites = Sequence[Op]


class Bus(Protocol):
    """Named durable queues of `Job`s between the stages, with leases and admission.

    Delivery is at least once. A job is *claimed* under a lease of `lease` seconds; while
    claimed no other claimer gets it. The claimer renews the lease while it works and
    ends the claim by settling the job (it is done, its follow-ups are queued) or retrying
    it (back in its queue, after a delay). A lease that runs out makes the job claimable
    again, with `attempts` one higher. Every claim carries a token: a claim whose lease
    ran out and whose job was claimed again since is *stale*, and settling, retrying or
    renewing with it changes nothing in the queues.

    Writes with queue changes. A stage's effects are store writes (`StoreWrites`) that
    must be durable together with the queue change that records the stage as done, or
    a crash between the two either loses the effect or repeats it unseen. `publish`,
    `publish_claimed` and `settle` take those writes, so that no caller needs to reach
    into the bus's storage. What a bus must guarantee:

    - when `settle` returns True, the writes, the follow-up jobs and the removal of the
      settled job are all durable; when `publish` returns, the writes and the job are;
    - a failing write (it raises) leaves the queues as they were: the call raises and
      neither the job nor its follow-ups are queued or removed;
    - the writes of a stale claim's `settle` are committed all the same (they record
      what really happened, e.g. a delivery, which the worker that holds the job now
      must find so as not to repeat it); only the queue change is dropped, and `settle`
      returns False.

    The embedded bus keeps queues and store in one SQLite file and does all of it in one
    transaction. A bus whose queues live elsewhere than the store (NATS JetStream, with
    PostgreSQL for the store) cannot; it keeps the guarantees by ordering: commit the
    writes to the store first, then publish the follow-ups (with a deduplication id per
    job and stage, so a repeat is dropped), then acknowledge the settled job. A crash
    between the steps repeats a stage, never loses one; the stages are idempotent
    (docs/architecture.md), so a repeat finds its effects recorded and does no harm. Such
    a bus learns that a claim is stale late — at the acknowledgement, after the writes — hence
    the rule above that a stale claim's writes are committed too; to publish no
    follow-ups for a stale claim it checks the claim in the writes' own transaction
    (e.g. a claim token kept in the store), as the embedded bus does.
    """

    @property
    def lease(self) -> float:
        """Seconds a claim holds its job unless renewed (renew well within it)."""
        ...

    async def publish(
        self, queue: str, job: Job, delay: float = 0.0, writes: StoreWrites = ()
    ) -> None:
        """Queue `job` on `queue`, claimable after `delay` seconds, durable together with
        `writes` when this returns."""
        ...

    async def publish_claimed(self, queue: str, job: Job, writes: StoreWrites = ()) -> Claimed:
        """Queue `job` already claimed by the caller (the intake handing a new job to the
        first stage in its own process): the claim is returned, no other claimer gets
        the job while its lease holds, and if the caller dies the lease runs out and any
        worker claims it. Consumers are not woken for it."""
        ...

    async def claim(self, queue: str, limit: int) -> list[Claimed]:
        """Up to `limit` jobs of `queue` that are due and not held by a claim, oldest
        first, each now claimed under this bus's lease; [] when there are none."""
        ...

    async def wait(self, queue: str, timeout: float) -> None:
        """Return once a job of `queue` may be claimable (one was published or comes
        due), or after `timeout` seconds. It may return early: callers claim and see."""
        ...

    async def renew(self, claimed: Sequence[Claimed]) -> None:
        """Extend the leases of these claims by this bus's lease; stale claims are
        ignored."""
        ...

    async def settle(
        self, claimed: Claimed, then: Sequence[Publish], writes: StoreWrites = ()
    ) -> bool:
        """Remove the claimed job and queue its follow-ups `then`, with `writes` (see
        the class docstring); False, with no queue change, when the claim is stale."""
        ...

    async def retry(
        self, claimed: Claimed, delay: float, payload: dict[str, Any] | None = None
    ) -> bool:
        """Put the claimed job back in its queue, claimable again after `delay` seconds,
        with `payload` replacing its payload when given; False, with no change, when
        the claim is stale."""
        ...

    async def depths(self) -> dict[str, int]:
        """Jobs per queue that holds any: claimed, due and delayed ones alike."""
        ...

    async def over_bound(self, queue: str) -> bool:
        """Admission control for the intake queue `queue`: True when the bus holds as
        much work ready for the stages as its bound allows (or that work waits too
        long), so new messages must be refused (SMTP 451 4.3.2, API 503) for now."""
        ...

    async def close(self) -> None:
        """Release what the bus holds (connections, subscriptions); jobs stay queued."""
        ...
