"""Stage `route`: find out where each recipient domain's mail goes, before anything else.

Input: queue `route`, one job per accepted message. Output: the next stage (`sign`).
For each recipient domain it looks up the MX set (the resolver caches answers for the
deliver stage). A domain that does not exist (NXDOMAIN) or publishes a null MX
(RFC 7505) cannot receive mail: its recipients are `bounced` here, at once, with
5.1.2 / 5.1.10. DNS trouble is not decided here: the deliver stage retries.
Trusts: the DNS resolver in `dns.nameservers`. Reads no settings of its own.
"""

from __future__ import annotations

import asyncio

from secumail.errors import DnsError, DnsPermanentError
from secumail.mail.secure_route import null_mx_refusal
from secumail.mail.status import RecipientStatus
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.stage import StageContext
from secumail.store.records import RecipientUpdate


class RouteStage:
    name = "route"
    verdicts = frozenset({Verdict.CONTINUE})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def handle(self, job: Job) -> StageResult:
        # Handed over by the intake of this process, or read from the store.
        record = job.memo.take_record() or await self.ctx.store.message(
            job.message_id, history=False, event_kinds=("signed", "scanned", "scan_skipped")
        )
        pending: dict[str, list[str]] = {}
        for r in record.recipients:
            if r.status is RecipientStatus.QUEUED:
                pending.setdefault(r.domain, []).append(r.address)
        verdicts = await asyncio.gather(*(self._domain_fate(d) for d in pending))
        updates = []
        for (domain, addresses), fate in zip(pending.items(), verdicts, strict=True):
            if fate is None:
                continue
            reply, enhanced = fate
            updates += [
                RecipientUpdate(
                    a,
                    RecipientStatus.BOUNCED,
                    reply=reply,
                    enhanced=enhanced,
                    count_attempt=False,  # decided from DNS: no MX was tried
                    event={"reason": reply, "domain": domain},
                )
                for a in addresses
            ]
        if updates:
            await self.ctx.store.record_outcome(job.message_id, updates)
        else:
            job.memo.record = record  # unchanged: the sign stage needs no second read
        return StageResult.go_on()

    async def _domain_fate(self, domain: str) -> tuple[str, str] | None:
        """None when the domain can receive mail (or DNS is unsure); else the bounce reason."""
        try:
            answer = await self.ctx.resolver.mx(domain)
        except DnsPermanentError:
            return f"550 5.1.2 Domain {domain} does not exist", "5.1.2"
        except DnsError:
            return None
        if answer.null_mx:
            return null_mx_refusal(domain)
        return None

    async def close(self) -> None:
        return None
