"""Stage `deliver`: deliver each pending recipient over a secure route, or not at all.

Input: queue `deliver`, one job per message. Output: `notify` (with {"kind": "failed"})
when every recipient is final and at least one failed; a `notify` job {"kind":
"delayed"} once, when a message has been deferred longer than
`notify.delay_warning_after`; otherwise the job is done, or deferred on the retry
schedule while any recipient is deferred.

Per recipient domain (concurrently), `DomainDelivery` plans the route — DANE, MTA-STS,
verified TLS (`mail.secure_route`) — and tries each MX in order. Every attempt is
recorded with MX, IP, route, TLS details and the remote reply; each delivered recipient
gets signed evidence; TLS sessions are counted for RFC 8460 reports. When the message is
final its body is crypto-shredded.

Trusts: the resolver (`dns.nameservers`; its AD bit only from loopback resolvers unless
`dns.trust_ad`), the system CA store plus `tls.trust_file`, MTA-STS policies over HTTPS.
Settings: delivery.*, mta_sts.*, notify.delay_warning_after, server.hostname.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from secumail.mail.secure_route import RouteMethod
from secumail.mail.status import RecipientStatus, suppresses
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.domain_delivery import DomainDelivery, DomainReport
from secumail.pipeline.payloads import delivery_round, notice, read_delivery
from secumail.pipeline.stage import StageContext
from secumail.store.database import Op
from secumail.store.records import (
    DeliveryAttempt,
    MessageRecord,
    RecipientState,
    RecipientUpdate,
)

log = logging.getLogger("secumail.deliver")


def _apply(states: list[RecipientState], updates: list[RecipientUpdate]) -> list[RecipientState]:
    """The recipients as the store now holds them (saves reading them back)."""
    by_address = {u.address: u for u in updates}
    out = []
    for r in states:
        u = by_address.get(r.address)
        out.append(
            r
            if u is None
            else replace(
                r,
                status=u.status,
                reply=u.reply or r.reply,
                enhanced=u.enhanced or r.enhanced,
                attempts=r.attempts + int(u.count_attempt),
            )
        )
    return out


class DeliverStage:
    name = "deliver"
    verdicts = frozenset({Verdict.CONTINUE, Verdict.DONE, Verdict.DEFER})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.delivery
        self.connector = ctx.connector
        self.domains = DomainDelivery(
            ctx.planner,
            ctx.connector,
            ctx.routing,
            ctx.signing,
            ctx.evidence_key,
            helo=ctx.settings.server.hostname,
            memory_seconds=self.settings.downgrade_memory_days * 86400,
            verp_key=ctx.verp_key,
        )

    async def close(self) -> None:
        await self.connector.close()

    async def handle(self, job: Job) -> StageResult:
        store = self.ctx.store
        record = job.memo.take_record() or await store.message(job.message_id, history=False)
        signed = job.memo.take_signed()
        # The sign stage's writes, when it ran just before in this process: they go first
        # into this stage's transaction (and stay in the memo until it committed, so the
        # runner writes them should this stage fail).
        earlier = list(job.memo.writes)
        pending = [r for r in record.recipients if not r.status.is_final]
        finish = [store.finish_message_op(record.id), self.ctx.bodies.destroy_op(record.id)]
        if pending:
            updates, attempts, ops, remember = await self._deliver(record, pending, signed)
            record.recipients = _apply(record.recipients, updates)
            final = all(r.status.is_final for r in record.recipients)
            # One transaction: outcomes, attempts, evidence, counters — and, when the
            # message is done, its end and the crypto-shredding of its body.
            outcome = store.outcome_op(
                record.id,
                updates,
                attempts=attempts,
                also=ops + (finish if final else []),
                before=earlier,
            )
            if final and not self._notice_due(record):
                # Nothing follows: written with the settling of the job, which the runner
                # does next (one transaction per message less; see StageRunner._settle).
                job.memo.writes = [outcome]
            else:
                await store.db.run(outcome)  # notify or a retry reads it back
                job.memo.writes = []
            for domain, method in remember:
                await self.domains.remember(domain, method)
        else:
            final = True
            await store.db.run(lambda c: [op(c) for op in [*earlier, *finish]])
            job.memo.writes = []
        if not final:
            return await self._defer(record, job)
        if self._notice_due(record):
            return StageResult.go_on(notice("failed"))
        return StageResult.done()

    @staticmethod
    def _notice_due(record: MessageRecord) -> bool:
        """A final message with a failed recipient: its sender gets a notice (`notify`)."""
        return bool(record.mail_from) and any(r.status.is_failure for r in record.recipients)

    async def _deliver(
        self, record: MessageRecord, pending: list[RecipientState], body: bytes | None = None
    ) -> tuple[
        list[RecipientUpdate], list[DeliveryAttempt], list[Op], list[tuple[str, RouteMethod]]
    ]:
        """(updates, attempts, store ops, domains to remember) of one delivery round
        (`body`: the message as stored, when the sign stage just handed it over)."""
        if body is None:
            body = await self.ctx.bodies.get(record.id)
        account = await self.ctx.account(record.account_id)
        by_domain: dict[str, list[str]] = {}
        for r in pending:
            by_domain.setdefault(r.domain, []).append(r.address)
        outcomes = await asyncio.gather(
            *(
                self.domains.deliver(record, account, d, addrs, body)
                for d, addrs in by_domain.items()
            ),
            return_exceptions=True,
        )
        reports = [
            self._internal_error(record, addrs, o) if isinstance(o, BaseException) else o
            for (_d, addrs), o in zip(by_domain.items(), outcomes, strict=True)
        ]
        kid = self.ctx.evidence_key.public_jwk()["kid"]
        updates = self._expire_if_too_old(record, [u for rep in reports for u in rep.updates])
        ops = [
            *(
                self.ctx.signing.put_evidence_op(record.id, rcpt, token, kid)
                for rep in reports
                for rcpt, token in rep.evidence
            ),
            *(op for rep in reports for op in rep.tlsrpt),
            *self._suppress_hard_bounces(record, updates),
        ]
        attempts = [a for rep in reports for a in rep.attempts]
        remember = [
            (d, rep.remember) for d, rep in zip(by_domain, reports, strict=True) if rep.remember
        ]
        return updates, attempts, ops, remember

    def _suppress_hard_bounces(
        self, record: MessageRecord, updates: list[RecipientUpdate]
    ) -> list[Op]:
        """An address the recipient's server says does not exist (5.1.x) is suppressed for
        the account, so it is not mailed again until someone removes the suppression."""
        if not record.account_id or not record.mail_from:
            return []
        return [
            self.ctx.suppressions.add_op(
                record.account_id, u.address, u.reply or "hard bounce", "bounce", record.id
            )
            for u in updates
            if u.status is RecipientStatus.BOUNCED and suppresses(u.enhanced)
        ]

    def _internal_error(
        self, record: MessageRecord, addresses: list[str], exc: BaseException
    ) -> DomainReport:
        """A bug in one domain's delivery defers that domain only; the others' results stand."""
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        log.error("message %s: delivery failed internally", record.id, exc_info=exc)
        return DomainReport().all(
            addresses, RecipientStatus.DEFERRED, "451 4.3.0 Temporary local problem", "4.3.0"
        )

    def _expire_if_too_old(
        self, record: MessageRecord, updates: list[RecipientUpdate]
    ) -> list[RecipientUpdate]:
        if time.time() - record.created_at < self.settings.max_age:
            return updates
        return [
            RecipientUpdate(
                u.address,
                RecipientStatus.EXPIRED,
                reply=u.reply,
                enhanced=u.enhanced or "4.4.7",
                count_attempt=u.count_attempt,
                event={**u.event, "expired_after_seconds": self.settings.max_age},
            )
            if u.status is RecipientStatus.DEFERRED
            else u
            for u in updates
        ]

    async def _defer(self, record: MessageRecord, job: Job) -> StageResult:
        attempt = read_delivery(job.payload)["attempt"]
        schedule = self.settings.retry_schedule or [300.0]
        delay = schedule[min(attempt - 1, len(schedule) - 1)]
        age = time.time() - record.created_at
        delay = max(1.0, min(delay, self.settings.max_age - age))
        warn_after = self.ctx.settings.notify.delay_warning_after
        if record.mail_from and record.warned_at is None and age >= warn_after:
            await self.ctx.bus.publish("notify", Job(record.id, notice("delayed")))
        return StageResult.defer(delay, payload=delivery_round(attempt + 1))
