"""Stage `scan`: no virus, no spam, nothing built to choke a scanner leaves through us.

Input: queue `scan`, one job per message (`{}`). Output: the next stage (`sign`); REJECT
(handed to `notify`, which tells the sender) when a check refuses the message; DEFER
while a scanner cannot be asked.

1. The gateway's own mail (null sender: notices, alerts, test-address replies) and a
   message already scanned (at acceptance with `scan.inline`, or by an earlier try of
   this job) pass unchanged.
2. `pipeline.scanning.Scanner`: the content limits, clamd, rspamd, on the plaintext in
   memory (unsealed from the spool, or handed over by the intake of this process).
3. Clean: the results are the `scanned` event (engine, verdict, signature or score:
   metadata only), written with what follows (`Job.memo` writes); with no engine set
   (only the content limits checked) there is no such event.
   Refused: every recipient not yet final is `rejected` (554 5.7.1 for a virus or spam,
   5.6.0 for a message over a limit) with the reason, the sealed body is destroyed in
   the same transaction, and the sender gets a notice and a `rejected` webhook.
4. A scanner that is down or times out: the message waits (`scan.retry_after`) — unless
   the account allows fail-open (`scan_fail_open`, off by default): then it passes,
   marked `scan_skipped` with the engine and reason. A message that waits longer than
   `delivery.max_age` is `expired`, and its sender told.
Trusts: the scanners named in the settings. Settings: scan.*, delivery.max_age.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from secumail.errors import ScannerUnavailable
from secumail.mail.scan_result import ScanResult, ScanVerdict
from secumail.mail.status import RecipientStatus
from secumail.net.rspamd import SpamContext
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.scanning import Scanner, refusal_reason, refused
from secumail.pipeline.stage import StageContext
from secumail.store.counters import Counters
from secumail.store.records import MessageRecord, RecipientUpdate

log = logging.getLogger("secumail.scan")


class ScanStage:
    name = "scan"
    verdicts = frozenset({Verdict.CONTINUE, Verdict.DEFER, Verdict.REJECT})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.scan
        scanner = ctx.scanner
        if scanner is None:
            counters = ctx.counters or Counters(ctx.store.db)
            scanner = Scanner.from_settings(self.settings, counters)
        self.scanner = scanner

    async def close(self) -> None:
        if self.ctx.scanner is None:
            await self.scanner.close()

    async def handle(self, job: Job) -> StageResult:
        store = self.ctx.store
        record = job.memo.take_record() or await store.message(
            job.message_id, history=False, event_kinds=("signed", "scanned", "scan_skipped")
        )
        pending = [r for r in record.recipients if not r.status.is_final]
        done = any(e.kind in ("scanned", "scan_skipped") for e in record.events)
        if done or not pending or not record.mail_from:
            job.memo.record = record
            return StageResult.go_on()
        body = job.memo.take_body() or await self.ctx.bodies.get(record.id)
        context = SpamContext(
            queue_id=record.id,
            mail_from=record.mail_from,
            recipients=[r.address for r in pending],
            user=record.account_id or "",
        )
        try:
            results = await self.scanner.scan(body, context)
        except ScannerUnavailable as exc:
            return await self._unavailable(job, record, body, exc)
        detail = {"results": [r.as_dict() for r in results]}
        bad = refused(results)
        if bad is not None:
            await self._refuse(record, bad, detail)
            return StageResult.reject(refusal_reason(bad))
        if results:  # no engine set: only the limits were checked; nothing claims a scan
            job.memo.writes.append(store.event_op(record.id, None, "scanned", detail))
        job.memo.record = record
        job.memo.body = body
        return StageResult.go_on()

    async def _unavailable(
        self, job: Job, record: MessageRecord, body: bytes, exc: ScannerUnavailable
    ) -> StageResult:
        account = await self.ctx.account(record.account_id)
        if account is not None and account.scan_fail_open:
            log.warning(
                "message %s passes unscanned (account allows it): %s", record.id, exc
            )
            job.memo.writes.append(
                self.ctx.store.event_op(
                    record.id, None, "scan_skipped", {"engine": exc.engine, "reason": exc.reason}
                )
            )
            job.memo.record = record
            job.memo.body = body
            return StageResult.go_on()
        max_age = self.ctx.settings.delivery.max_age
        if time.time() - record.created_at > max_age:
            reason = f"could not be scanned for viruses and spam within {max_age / 86400:g} days ({exc})"
            await self._finish(record, RecipientStatus.EXPIRED, "4.4.7", f"451 4.4.7 {reason}", {})
            return StageResult.reject(reason)
        return StageResult.defer(self.settings.retry_after, f"scanner unavailable: {exc}")

    async def _refuse(
        self, record: MessageRecord, result: ScanResult, detail: dict[str, Any]
    ) -> None:
        enhanced = "5.6.0" if result.verdict is ScanVerdict.OVER_LIMIT else "5.7.1"
        reason = refusal_reason(result)
        await self._finish(
            record, RecipientStatus.REJECTED, enhanced, f"554 {enhanced} {reason}", detail
        )
        log.warning(
            "message %s refused by the scan",
            record.id,
            extra={"fields": {"engine": result.engine, "verdict": str(result.verdict)}},
        )

    async def _finish(
        self,
        record: MessageRecord,
        status: RecipientStatus,
        enhanced: str,
        reply: str,
        detail: dict[str, Any],
    ) -> None:
        """Every recipient not yet final gets ``status``; the body is destroyed with it."""
        store, bodies = self.ctx.store, self.ctx.bodies
        updates = [
            RecipientUpdate(
                r.address,
                status,
                reply=reply,
                enhanced=enhanced,
                count_attempt=False,  # decided before delivery: no MX was tried
                event={"reason": reply.split(" ", 2)[2]},
            )
            for r in record.recipients
            if not r.status.is_final
        ]
        events = [(None, "scanned", dict(detail))] if detail else []
        await store.record_outcome(
            record.id,
            updates,
            events=events,
            also=[store.finish_message_op(record.id), bodies.destroy_op(record.id)],
        )
