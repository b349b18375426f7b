"""The intake: turns an accepted message into durable state and the first queue entry.

One group-committed transaction holds the metadata, the sealed body and its wrapped key,
and the job for the first stage. Only when it is durable does the caller answer 250.
"""

from __future__ import annotations

from secumail.errors import AdmissionRefused
from secumail.mail.ids import new_message_id
from secumail.pipeline.bus import Job, Publish
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.spool.body_store import BodyStore
from secumail.store.metadata import MetadataStore, Op
from secumail.store.records import NewMessage


class Intake:
    def __init__(
        self, store: MetadataStore, bodies: BodyStore, bus: EmbeddedBus, first_queue: str
    ) -> None:
        self.store = store
        self.bodies = bodies
        self.bus = bus
        self.first_queue = first_queue

    async def full(self) -> bool:
        """Admission control: is the first queue over its bound?"""
        return await self.bus.over_bound(self.first_queue)

    async def accept(
        self, message: NewMessage, body: bytes, *, admission: bool = True, also: list[Op] = ()
    ) -> str:
        """Make the message durable and queue it (with the caller's `also` writes); its id."""
        if admission and await self.full():
            raise AdmissionRefused("intake queue is full")
        if not message.id:
            message.id = new_message_id()
        ops = [self.store.insert_message_op(message), self.bodies.put_op(message.id, body), *also]
        publish = Publish(self.first_queue, Job(message.id))
        await self.bus.db.run(self.bus.publish_op(publish, ops))
        self.bus.announce([publish])
        return message.id
