"""Stage `notify`: tell the sender what happened, in the account's language.

Input: queue `notify`, jobs {"kind": "failed"} (every recipient final, some failed),
{"kind": "delayed"} (deferred for longer than `notify.delay_warning_after`) or
{"kind": "bounced", "recipient": …} (a bounce that came later, to the inbound MX). Output:
none; the notice itself is a new message (null envelope sender, RFC 3464 DSN) put into
the intake, so it is delivered by the same secure-route rules as everything else.
A notice is never sent about a notice (RFC 3461 §6.2: the null sender gets no DSN),
and each message gets at most one failure notice and one delay notice, and one notice
per recipient that bounced later.
Also copied to the account's `notify_address` when it has one.
Settings: server.hostname, notify.*.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from secumail.errors import NotFound
from secumail.mail.dsn import DsnRecipient, DsnRequest, build_dsn
from secumail.mail.ids import new_message_id
from secumail.mail.status import RecipientStatus
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.payloads import read_notice
from secumail.pipeline.stage import StageContext
from secumail.store.records import MessageRecord, NewMessage

log = logging.getLogger("secumail.notify")


class NotifyStage:
    name = "notify"
    verdicts = frozenset({Verdict.DONE})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.hostname = ctx.settings.server.hostname

    async def close(self) -> None:
        return None

    async def handle(self, job: Job) -> StageResult:
        asked = read_notice(job.payload)
        kind = asked["kind"]
        record = await self.ctx.store.message(job.message_id)
        if not record.mail_from:
            return StageResult.done("never a notice about a notice")
        about = asked.get("recipient")
        if any(e.kind == f"notice_{kind}" and e.recipient == about for e in record.events):
            return StageResult.done("already notified")
        if kind == "bounced":
            wanted = [
                r
                for r in record.recipients
                if r.address == about and r.status is RecipientStatus.BOUNCED
            ]
        elif kind == "delayed":
            if not await self.ctx.store.mark_warned(record.id):
                return StageResult.done("already warned")
            wanted = [r for r in record.recipients if r.status is RecipientStatus.DEFERRED]
        else:
            wanted = [r for r in record.recipients if r.status.is_failure]
        if not wanted:
            return StageResult.done("nothing to report")
        locale, copy_to = "en", None
        if record.account_id:
            try:
                account = await self.ctx.store.get_account(record.account_id)
                locale, copy_to = account.locale, account.notify_address
            except NotFound:
                pass
        request = DsnRequest(
            reporting_mta=self.hostname,
            sender=record.mail_from,
            original_id=record.id,
            arrival=record.created_at,
            recipients=tuple(self._dsn_recipient(record, r.address) for r in wanted),
            locale=locale,
            kind=kind,
            original_from=record.header_from,
            original_message_id=record.message_id_header,
            original_subject=record.subject,
            retry_until=record.created_at + self.ctx.settings.delivery.max_age,
        )
        notice = build_dsn(request, time.time())
        recipients = [record.mail_from]
        if copy_to and copy_to.lower() != record.mail_from.lower():
            recipients.append(copy_to)
        notice_id = new_message_id()
        await self.ctx.intake.accept(
            NewMessage(
                id=notice_id,
                account_id=record.account_id,
                mail_from="",
                recipients=recipients,
                size=len(notice),
                header_from=f"mailer-daemon@{self.hostname}",
                dsn_of=record.id,
                smtputf8=not notice.isascii(),
            ),
            notice,
            admission=False,
            also=[
                self.ctx.store.event_op(
                    record.id, about, f"notice_{kind}", {"notice_id": notice_id, "to": recipients}
                )
            ],
        )
        log.info("message %s: %s notice %s to the sender", record.id, kind, notice_id)
        return StageResult.done()

    @staticmethod
    def _dsn_recipient(record: MessageRecord, address: str) -> DsnRecipient:
        state = next(r for r in record.recipients if r.address == address)
        detail: dict[str, Any] = {}
        for e in reversed(record.events):
            if e.recipient == address and e.kind == state.status.value:
                detail = e.detail
                break
        enhanced = state.enhanced or (
            "4.0.0" if state.status is RecipientStatus.DEFERRED else "5.0.0"
        )
        return DsnRecipient(
            address=address,
            status=state.status,
            enhanced=enhanced,
            diagnostic=state.reply or state.status.value,
            remote_mta=detail.get("mx"),
            details=tuple(detail.get("reasons", ())),
        )
