"""The intake: turns an accepted message into durable state and the first queue entry.

One group-committed transaction holds the metadata, the sealed body and its wrapped key,
and the job for the first stage. Only when it is durable does the caller answer 250.

When the first stage runs in this process and has room (`local`), the job is written
already claimed by it and handed over in memory with the message record and body it
would otherwise read back and unseal: no claim transaction, no wait for one, no second
read. The job is in the queue all the same, so a crash loses nothing: its lease runs out
and any worker takes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from secumail.errors import AdmissionRefused, BusUnavailable
from secumail.mail.ids import new_message_id
from secumail.pipeline.bus import Bus, Claimed, Job
from secumail.spool.body_store import BodyStore
from secumail.store.database import Op
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage

log = logging.getLogger("secumail.intake")


class LocalConsumer(Protocol):
    """The first stage's runner in this process (see `StageRunner.reserve`)."""

    def reserve(self) -> bool: ...

    def unreserve(self) -> None: ...

    def adopt(self, claimed: Claimed) -> None: ...


class Intake:
    def __init__(self, store: MetadataStore, bodies: BodyStore, bus: Bus, first_queue: str) -> None:
        self.store = store
        self.bodies = bodies
        self.bus = bus
        self.first_queue = first_queue
        self.local: LocalConsumer | None = None

    async def full(self) -> bool:
        """Admission control: is the work waiting for the stages at the bus's bound (or
        waiting too long)? `Bus.over_bound` says what counts."""
        try:
            return await self.bus.over_bound(self.first_queue)
        except BusUnavailable as exc:
            # Nothing can be queued now: refused like a full queue (a temporary reply), and
            # the sender's server tries again; what is queued already is safe in the bus.
            log.warning("intake refuses new work: %s", exc)
            return True

    async def accept(
        self, message: NewMessage, body: bytes, *, admission: bool = True, also: Sequence[Op] = ()
    ) -> str:
        """Make the message durable and queue it (with the caller's `also` writes); its id."""
        if admission and await self.full():
            raise AdmissionRefused("intake queue is full")
        if not message.id:
            message.id = new_message_id()
        now = time.time()
        ops = [
            self.store.insert_message_op(message, now),
            self.bodies.put_op(message.id, body),
            *also,
        ]
        job = Job(message.id)
        local = self.local
        if local is None or not local.reserve():
            await self.bus.publish(self.first_queue, job, writes=ops)
            return message.id
        try:
            claimed = await self.bus.publish_claimed(self.first_queue, job, writes=ops)
        except BaseException:
            local.unreserve()
            raise
        job.memo.record = self.store.accepted_record(message, now)
        job.memo.body = body
        local.adopt(claimed)
        return message.id
