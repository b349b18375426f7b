"""Stage `sign`: make every message verifiable — S/MIME (optional) then DKIM.

Input: queue `sign`, one job per message. Output: the next stage (`deliver`); REJECT
(handed to `notify`) when a message cannot be signed with a key that is really its own.

1. Adds `Date` and `Message-ID` when the sender left them out (RFC 5322 §3.6).
2. S/MIME (RFC 8551), when the account has it on: a detached `multipart/signed` with a
   certificate for the From address from Secumail's own CA, so every mail program can
   still show the message. Signed before DKIM, so DKIM covers the S/MIME structure.
3. DKIM (RFC 6376 with RSA-2048, RFC 8463 with Ed25519), relaxed/relaxed, over-signing
   the identity headers, with the published keys of the From domain. A From domain with
   no published key is never signed with another domain's key unless the account allows
   the gateway's domain (`gateway_dkim`); otherwise every recipient is `rejected` with a
   reason that says which DNS records to publish. Notices are signed by the gateway.

What signing added (the header fields; with S/MIME the whole body, sealed under a fresh
data key) is stored in the same transaction as the `signed` event, so a repeated job
never signs twice: the transaction that settles the job and queues its delivery, or,
when deliver runs next in this process, the one that records the delivery (`Job.memo`
writes, `pipeline.handoff`; one commit less between acceptance and delivery).
Trusts: the keyring (sealed keys in the store), the CA. Settings: signing.*, server.hostname.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime

from secumail.mail import dkim, smime
from secumail.mail.headers import parse_header_section
from secumail.mail.status import RecipientStatus
from secumail.pipeline.bus import Job, StageResult, Verdict
from secumail.pipeline.stage import StageContext
from secumail.store.records import Account, MessageRecord, RecipientState, RecipientUpdate

log = logging.getLogger("secumail.sign")


def missing_identity(message: bytes, hostname: str, message_id: str) -> bytes:
    """The Date and Message-ID fields to prepend when absent (RFC 5322 §3.6.1, §3.6.4)."""
    section = parse_header_section(message)
    extra = b""
    if section.first("Date") is None:
        extra += f"Date: {format_datetime(datetime.now(UTC))}\r\n".encode()
    if section.first("Message-ID") is None:
        extra += f"Message-ID: <{message_id}.{secrets.token_hex(6)}@{hostname}>\r\n".encode()
    return extra


class SignStage:
    name = "sign"
    verdicts = frozenset({Verdict.CONTINUE, Verdict.REJECT})

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.hostname = ctx.settings.server.hostname
        self.gateway_domain = ctx.settings.gateway_domain

    async def close(self) -> None:
        return None

    async def handle(self, job: Job) -> StageResult:
        store = self.ctx.store
        record = job.memo.take_record() or await store.message(
            job.message_id, history=False, event_kinds=("signed",)
        )
        if any(e.kind == "signed" for e in record.events):
            return StageResult.go_on()
        pending = [r for r in record.recipients if not r.status.is_final]
        if not pending:
            return StageResult.go_on()  # nothing left to deliver; deliver finishes it
        account = await self.ctx.account(record.account_id)
        # The body as the intake of this process stored it (no prefix yet), or unsealed.
        body = job.memo.take_body() or await self.ctx.bodies.get(record.id)
        prefix = missing_identity(body, self.hostname, record.id)
        signed_with: dict[str, object] = {}
        rewritten = False
        if account is not None and account.smime and not record.dsn_of and record.header_from:
            material = await self.ctx.smime.material(record.header_from)
            try:
                body = await asyncio.to_thread(
                    smime.sign_message, prefix + body, material.cert, material.key, material.chain
                )
            except smime.SmimeError as exc:
                # The message itself is at fault: retrying cannot help (it would fail on
                # every attempt, and the sender would never hear of it).
                reason = f"cannot S/MIME-sign the message: {exc}"
                await self._reject(record, pending, reason, enhanced="5.6.0")
                return StageResult.reject(reason)
            prefix, rewritten = b"", True
            signed_with["smime"] = format(material.cert.serial_number, "x")
        keys, refusal = await self._dkim_keys(record, account)
        if refusal is not None:
            await self._reject(record, pending, refusal)
            return StageResult.reject(refusal)
        if keys:
            # RSA holds no GIL inside OpenSSL: a worker thread lets signing use another
            # core — unless every core has a worker process already (StageContext).
            if self.ctx.sign_in_thread:
                prefix = await asyncio.to_thread(dkim.sign, prefix + body, keys) + prefix
            else:
                prefix = dkim.sign(prefix + body, keys) + prefix
            signed_with["dkim"] = [f"{k.domain}/{k.selector}/{k.algorithm}" for k in keys]
        # Only what signing added is stored (header fields, no content); the sealed body is
        # rewritten only when S/MIME changed it.
        writes = [
            self.ctx.bodies.prefix_op(record.id, prefix),
            store.event_op(record.id, None, "signed", signed_with),
        ]
        if rewritten:
            writes.insert(0, self.ctx.bodies.replace_op(record.id, body))
        # Written with what follows, not on their own: with the settling of this job (the
        # deliver job is queued in the same transaction), or — when deliver runs next in
        # this process — in the transaction that records the delivery. Until then nothing
        # is lost but the signing, which a repeated job does again.
        job.memo.writes.extend(writes)  # after what an earlier stage left (scan's event)
        # For the deliver stage when it runs next in this process: what it would read back.
        job.memo.record = record
        job.memo.signed = prefix + body
        return StageResult.go_on()

    async def _dkim_keys(
        self, record: MessageRecord, account: Account | None
    ) -> tuple[list[dkim.DkimKey], str | None]:
        keyring = self.ctx.keyring
        author_domain = (record.header_from or "").rpartition("@")[2].lower()
        if record.dsn_of or not record.mail_from or record.account_id is None:
            # Notices and reports are the gateway's own mail; signed when its keys are published.
            keys = await keyring.signing_keys(self.gateway_domain)
            if not keys:
                log.warning(
                    "notice %s leaves unsigned: no published DKIM key for %s",
                    record.id,
                    self.gateway_domain,
                )
            return keys, None
        keys = await keyring.signing_keys(author_domain)
        if keys:
            return keys, None
        if account is not None and account.gateway_dkim:
            keys = await keyring.signing_keys(self.gateway_domain)
            if keys:
                return keys, None
        return [], (
            f"no published DKIM key for {author_domain}: publish the DKIM records shown by "
            f"`secumail domain records {author_domain}` and run `secumail domain verify {author_domain}`"
        )

    async def _reject(
        self,
        record: MessageRecord,
        pending: list[RecipientState],
        reason: str,
        enhanced: str = "5.7.0",
    ) -> None:
        updates = [
            RecipientUpdate(
                r.address,
                RecipientStatus.REJECTED,
                reply=f"550 {enhanced} {reason}",
                enhanced=enhanced,
                count_attempt=False,  # refused before delivery: no MX was tried
                event={"reason": reason},
            )
            for r in pending
        ]
        await self.ctx.store.record_outcome(record.id, updates)
        await self.ctx.store.db.run(
            lambda c: (
                self.ctx.store.finish_message_op(record.id)(c),
                self.ctx.bodies.destroy_op(record.id)(c),
            )
        )
        log.warning("message %s rejected: %s", record.id, reason)
