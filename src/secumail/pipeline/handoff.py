"""What a stage hands the next one when the runner chains them in one process (`Job.memo`).

Never stored, never sent on the bus: a stage that finds nothing here reads the same from
the store, so a job that came through the queue (another process, a retry) is handled
alike. A stage *takes* what it uses (so nothing stale is passed further on) and a stage
that changes the stored message hands on only what still matches the store.

    field    put by                                  taken by
    record   intake; route (when it changed nothing); route, scan, sign, deliver
             scan; sign
    body     intake (as stored, no signing prefix);  scan, sign
             scan
    signed   sign (prefix + body, as stored)         deliver
    writes   scan (added to); sign (added to);       deliver (first in its transaction);
             deliver (when nothing follows)          the runner (with the settling)

`writes` are store operations a stage left to be committed with what follows — the next
stage's transaction, or the settling of the job — so a chain costs one commit less.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secumail.store.database import Op
from secumail.store.records import MessageRecord


@dataclass(slots=True)
class Handoff:
    record: MessageRecord | None = None  # the message as the store holds it now
    body: bytes | None = None  # the body as the intake stored it
    signed: bytes | None = None  # the message as the sign stage stored it
    writes: list[Op] = field(default_factory=list)  # to commit with what follows

    def take_record(self) -> MessageRecord | None:
        record, self.record = self.record, None
        return record

    def take_body(self) -> bytes | None:
        body, self.body = self.body, None
        return body

    def take_signed(self) -> bytes | None:
        signed, self.signed = self.signed, None
        return signed

    def take_writes(self) -> list[Op]:
        """The writes left for the caller to commit; none remain here."""
        writes, self.writes = self.writes, []
        return writes
