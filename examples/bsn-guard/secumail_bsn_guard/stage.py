"""Stage `bsn_guard`: a message with a BSN goes to the organisation's own domains only.

Input: the job of every message (payload `{}`), after `scan` and before `sign` (it reads
the body as the sender wrote it; signing comes after any refusal). Verdicts: CONTINUE
(nothing found, only internal recipients, the account is allowed, or some recipients
refused and the rest go on) or REJECT (every recipient left was external: the sender is
told by the `notify` stage).

How it keeps the plug-in contract (docs/plugins.md):
- reads the message record and body from `Job.memo` when the stage before handed them
  over, else from the store; hands them on for the next stage;
- idempotent: its decision is the `bsn_checked` event, and a repeated job that finds it
  does nothing again;
- its writes go with what follows (`job.memo.writes`) or, when it refuses recipients, in
  one `record_outcome` transaction;
- never writes the number, the text or a file name anywhere.
Settings: `[plugins.bsn_guard] allowed_accounts = [names or ids]`.
"""

from __future__ import annotations

import asyncio
import logging

from secumail.mail.status import RecipientStatus
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.stage import StageContext
from secumail.store.records import RecipientUpdate
from secumail_bsn_guard.bsn import contains_bsn
from secumail_bsn_guard.text import texts

log = logging.getLogger("secumail.bsn_guard")

EVENT = "bsn_checked"


def where_bsn(message: bytes) -> str | None:
    """"body" or "attachment" where a BSN stands first; None when there is none."""
    for where, text in texts(message):
        if contains_bsn(text):
            return where
    return None


class BsnGuardStage:
    name = "bsn_guard"
    verdicts = frozenset({Verdict.CONTINUE, Verdict.REJECT})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        conf = ctx.settings.plugins.get(self.name)
        self.allowed = {str(a) for a in conf.get("allowed_accounts", [])}

    async def close(self) -> None:
        return None

    async def handle(self, job: Job) -> StageResult:
        store = self.ctx.store
        record = job.memo.take_record() or await store.message(
            job.message_id, history=False, event_kinds=(EVENT,)
        )
        pending = [r for r in record.recipients if not r.status.is_final]
        account = await self.ctx.account(record.account_id)
        if (
            any(e.kind == EVENT for e in record.events)
            or not pending
            or account is None  # the gateway's own mail (notices)
            or not record.mail_from
            or account.id in self.allowed
            or account.name in self.allowed
        ):
            job.memo.record = record
            return StageResult.go_on()
        own = await store.verified_domains(account.id)
        external = [r for r in pending if r.domain not in own]
        if not external:
            job.memo.record = record
            return StageResult.go_on()
        body = job.memo.take_body() or await self.ctx.bodies.get(record.id)
        where = await asyncio.to_thread(where_bsn, body)
        if where is None:
            job.memo.writes.append(store.event_op(record.id, None, EVENT, {"found": False}))
            job.memo.record = record
            job.memo.body = body
            return StageResult.go_on()
        updates = [
            RecipientUpdate(
                r.address,
                RecipientStatus.REJECTED,
                reply=(
                    f"554 5.7.1 the message contains a citizen service number (BSN) in its {where}"
                    f" and {r.domain} is outside the organisation"
                ),
                enhanced="5.7.1",
                count_attempt=False,
                event={"reason": f"BSN in the {where}, recipient outside the organisation"},
            )
            for r in external
        ]
        everyone = len(external) == len(pending)
        also = [store.event_op(record.id, None, EVENT, {"found": True, "where": where})]
        if everyone:
            also += [store.finish_message_op(record.id), self.ctx.bodies.destroy_op(record.id)]
        await store.record_outcome(record.id, updates, also=[*job.memo.take_writes(), *also])
        log.warning(
            "message %s: BSN found, %d external recipient(s) refused", record.id, len(external)
        )
        if everyone:
            return StageResult.reject("a citizen service number (BSN) to outside the organisation")
        return StageResult.go_on()  # the internal recipients go on; deliver tells the sender
