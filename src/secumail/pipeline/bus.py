"""The bus between stages: named durable queues with at-least-once delivery.

A job is claimed with a lease; the worker that holds it renews the lease while it works
(`renew`) and, when done, settles it: removes it and publishes what follows, in one step.
A worker that dies lets its lease run out and the job is claimed again. Stages are
therefore idempotent: their effects are recorded so a repeated job does no harm.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Protocol

from secumail.pipeline.handoff import Handoff


@dataclass(slots=True)
class Job:
    message_id: str
    payload: dict = field(default_factory=dict)
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
    """What a stage decided about a job; the closed set of outcomes (DESIGN.md)."""

    CONTINUE = "continue"  # pass the job on to the next stage
    DONE = "done"  # nothing further to do
    DEFER = "defer"  # try this stage again after a delay
    REJECT = "reject"  # the message is refused; the stage has recorded why


@dataclass(frozen=True, slots=True)
class StageResult:
    verdict: Verdict
    delay: float = 0.0
    reason: str = ""
    payload: dict | None = None  # replaces the job's payload when passed on

    @classmethod
    def go_on(cls, payload: dict | None = None) -> StageResult:
        return cls(Verdict.CONTINUE, payload=payload)

    @classmethod
    def done(cls, reason: str = "") -> StageResult:
        return cls(Verdict.DONE, reason=reason)

    @classmethod
    def defer(cls, delay: float, reason: str = "", payload: dict | None = None) -> StageResult:
        return cls(Verdict.DEFER, delay=delay, reason=reason, payload=payload)

    @classmethod
    def reject(cls, reason: str) -> StageResult:
        return cls(Verdict.REJECT, reason=reason)


class Bus(Protocol):
    async def publish(self, queue: str, job: Job, delay: float = 0.0) -> None: ...

    async def claim(self, queue: str, limit: int) -> list[Claimed]: ...

    async def wait(self, queue: str, timeout: float) -> None: ...

    async def settle(self, claimed: Claimed, then: list[Publish]) -> bool: ...

    async def retry(self, claimed: Claimed, delay: float, payload: dict | None = None) -> None: ...

    async def renew(self, claimed: list[Claimed]) -> None: ...

    async def depths(self) -> dict[str, int]: ...

    async def over_bound(self, queue: str) -> bool: ...
