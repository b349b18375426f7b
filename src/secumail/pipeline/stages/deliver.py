"""Stage `deliver`: deliver each pending recipient over a secure route, or not at all.

Input: queue `deliver`, one job per message. Output: `notify` (with {"kind": "failed"})
when every recipient is final and at least one failed; a `notify` job {"kind":
"delayed"} once, when a message has been deferred longer than
`notify.delay_warning_after`; otherwise the job is done, or deferred on the retry
schedule while any recipient is deferred.

Per recipient domain: MX lookup (RFC 5321 §5.1, null MX RFC 7505), then each MX in
order, each of its addresses, with the route `mail.secure_route.plan_routes` chose.
The message is sent only inside TLS that passed verification; `conclude()` decides the
fate from what each MX did. Every attempt is recorded with MX, IP, TLS details and the
remote reply. When the message is final its body is crypto-shredded.

Trusts: the resolver (`dns.nameservers`), the system CA store plus `tls.trust_file`.
Settings: delivery.*, notify.delay_warning_after, server.hostname.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from secumail.errors import (
    ConnectError,
    DeliveryError,
    DnsPermanentError,
    DnsTemporaryError,
    InsecureRoute,
    SmtpReplyError,
)
from secumail.mail.reply import Reply
from secumail.mail.secure_route import DomainFate, MxOutcome, MxRoute, conclude, plan_routes
from secumail.mail.status import RecipientStatus
from secumail.net.smtp_client import SmtpConnection, TransactionResult
from secumail.net.smtp_pool import ConnectionPool
from secumail.net.tls import relaxed_client_context, verifying_client_context
from secumail.pipeline.bus import Job, StageResult
from secumail.pipeline.stage import StageContext
from secumail.pki.evidence import message_sha256, sign_evidence
from secumail.store.records import MessageRecord, RecipientUpdate

log = logging.getLogger("secumail.deliver")


@dataclass
class DomainReport:
    updates: list[RecipientUpdate] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (recipient, JWS)


@dataclass
class _MxTry:
    outcome: MxOutcome
    reason: str = ""
    result: TransactionResult | None = None
    error: DeliveryError | None = None


class DeliverStage:
    name = "deliver"

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.delivery
        self.helo = ctx.settings.server.hostname
        self.tls_context = verifying_client_context(ctx.settings.tls.trust_file)
        self.relaxed_context = relaxed_client_context()
        self.pool = ConnectionPool(
            idle=self.settings.connection_idle,
            max_messages=self.settings.connection_max_messages,
            per_destination=self.settings.connections_per_destination,
        )

    async def close(self) -> None:
        await self.pool.close()

    # -- the job -------------------------------------------------------------------
    async def handle(self, job: Job) -> StageResult:
        store = self.ctx.store
        record = await store.message(job.message_id)
        pending = [r for r in record.recipients if not r.status.is_final]
        if pending:
            body = await self.ctx.bodies.get(record.id)
            by_domain: dict[str, list[str]] = {}
            for r in pending:
                by_domain.setdefault(r.domain, []).append(r.address)
            outcomes = await asyncio.gather(
                *(self._deliver_domain(record, d, addrs, body) for d, addrs in by_domain.items()),
                return_exceptions=True,
            )
            reports = [
                self._internal_error(record, addrs, o) if isinstance(o, BaseException) else o
                for (_d, addrs), o in zip(by_domain.items(), outcomes, strict=True)
            ]
            updates = [u for rep in reports for u in rep.updates]
            updates = self._expire_if_too_old(record, updates)
            kid = self.ctx.evidence_key.public_jwk()["kid"]
            await store.record_outcome(
                record.id,
                updates,
                attempts=[a for rep in reports for a in rep.attempts],
                also=[
                    self.ctx.signing.put_evidence_op(record.id, rcpt, token, kid)
                    for rep in reports
                    for rcpt, token in rep.evidence
                ],
            )
            record = await store.message(record.id)
        deferred = [r for r in record.recipients if not r.status.is_final]
        if deferred:
            return await self._defer(record, job)
        await store.db.run(
            lambda c: (
                store.finish_message_op(record.id)(c),
                self.ctx.bodies.destroy_op(record.id)(c),
            )
        )
        failed = any(r.status.is_failure for r in record.recipients)
        if failed and record.mail_from:
            return StageResult.go_on({"kind": "failed"})
        return StageResult.done()

    def _internal_error(
        self, record: MessageRecord, addresses: list[str], exc: BaseException
    ) -> DomainReport:
        """A bug in one domain's delivery defers that domain only; the others' results stand."""
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        log.error("message %s: delivery failed internally", record.id, exc_info=exc)
        return self._all(
            DomainReport(),
            addresses,
            RecipientStatus.DEFERRED,
            "451 4.3.0 Temporary local problem",
            "4.3.0",
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
                event={**u.event, "expired_after_seconds": self.settings.max_age},
            )
            if u.status is RecipientStatus.DEFERRED
            else u
            for u in updates
        ]

    async def _defer(self, record: MessageRecord, job: Job) -> StageResult:
        attempt = int(job.payload.get("attempt", 1))
        schedule = self.settings.retry_schedule or [300.0]
        delay = schedule[min(attempt - 1, len(schedule) - 1)]
        age = time.time() - record.created_at
        delay = max(1.0, min(delay, self.settings.max_age - age))
        warn_after = self.ctx.settings.notify.delay_warning_after
        if record.mail_from and record.warned_at is None and age >= warn_after:
            await self.ctx.bus.publish("notify", Job(record.id, {"kind": "delayed"}))
        return StageResult.defer(delay, payload={**job.payload, "attempt": attempt + 1})

    # -- one domain ----------------------------------------------------------------
    async def _deliver_domain(
        self, record: MessageRecord, domain: str, addresses: list[str], body: bytes
    ) -> DomainReport:
        report = DomainReport()
        try:
            answer = await self.ctx.resolver.mx(domain)
        except DnsPermanentError as exc:
            return self._all(
                report, addresses, RecipientStatus.BOUNCED, f"550 5.1.2 {exc}", "5.1.2"
            )
        except DnsTemporaryError as exc:
            return self._all(
                report, addresses, RecipientStatus.DEFERRED, f"451 4.4.3 {exc}", "4.4.3"
            )
        if answer.null_mx:
            return self._all(
                report,
                addresses,
                RecipientStatus.BOUNCED,
                f"556 5.1.10 Domain {domain} does not accept mail (null MX, RFC 7505)",
                "5.1.10",
            )
        outcomes: list[MxOutcome] = []
        reasons: list[str] = []
        last_error: DeliveryError | None = None
        relaxed = record.tls_required_no and not record.requiretls
        for route in plan_routes([(h.preference, h.host) for h in answer.hosts], relaxed=relaxed):
            tried = await self._try_mx_host(record, domain, route, addresses, body, report)
            for t in tried:
                outcomes.append(t.outcome)
                if t.reason:
                    reasons.append(t.reason)
                if t.error is not None:
                    last_error = t.error
                if t.outcome is MxOutcome.TRANSACTION and t.result is not None:
                    self._from_transaction(report, addresses, t.result, route)
                    self._sign_evidence(record, report, body)
                    return report
        fate = conclude(outcomes)
        if fate is DomainFate.REFUSED_INSECURE:
            # RFC 8689 §5: 5.7.30 when REQUIRETLS support was what was missing.
            enhanced = (
                "5.7.30" if last_error is not None and last_error.enhanced == "5.7.30" else "5.7.10"
            )
            return self._all(
                report,
                addresses,
                RecipientStatus.REFUSED_INSECURE,
                f"550 {enhanced} No secure route to {domain}: " + "; ".join(reasons),
                enhanced,
                reasons=reasons,
            )
        if fate is DomainFate.BOUNCED and last_error is not None:
            return self._all(
                report,
                addresses,
                RecipientStatus.BOUNCED,
                last_error.line or last_error.reason,
                last_error.enhanced or "5.0.0",
                reasons=reasons,
            )
        text = "; ".join(reasons) or f"no mail server of {domain} could be reached"
        return self._all(
            report,
            addresses,
            RecipientStatus.DEFERRED,
            f"451 4.4.1 {text}",
            (
                last_error.enhanced
                if last_error and last_error.enhanced.startswith("4")
                else "4.4.1"
            ),
            reasons=reasons,
        )

    def _all(
        self,
        report: DomainReport,
        addresses: list[str],
        status: RecipientStatus,
        reply: str,
        enhanced: str,
        reasons: list[str] | None = None,
    ) -> DomainReport:
        event: dict = {"reply": reply}
        if reasons:
            event["reasons"] = reasons
        report.updates += [
            RecipientUpdate(a, status, reply, enhanced, event=event) for a in addresses
        ]
        return report

    def _from_transaction(
        self, report: DomainReport, addresses: list[str], result: TransactionResult, route: MxRoute
    ) -> DomainReport:
        for address in addresses:
            reply = result.recipients.get(address) or Reply(451, "4.4.0", "no reply for recipient")
            if reply.is_positive:
                status = RecipientStatus.DELIVERED
            elif reply.is_permanent:
                status = RecipientStatus.BOUNCED
            else:
                status = RecipientStatus.DEFERRED
            report.updates.append(
                RecipientUpdate(
                    address,
                    status,
                    str(reply),
                    reply.enhanced,
                    event={"mx": route.host, "route": route.method.value, "reply": str(reply)},
                )
            )
        return report

    def _sign_evidence(self, record: MessageRecord, report: DomainReport, body: bytes) -> None:
        """A signed evidence record for each recipient the remote server accepted."""
        attempt = report.attempts[-1]
        digest = message_sha256(body)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for u in report.updates:
            if u.status is not RecipientStatus.DELIVERED:
                continue
            evidence = {
                "message_id": record.id,
                "message_sha256": digest,
                "envelope_from": record.mail_from,
                "recipient": u.address,
                "mx_host": attempt["mx"],
                "mx_ip": attempt["ip"],
                "route": attempt["route_method"],
                "tls_version": attempt.get("tls_version"),
                "tls_cipher": attempt.get("cipher"),
                "peer_cert_sha256": attempt.get("cert_fingerprint"),
                "remote_reply": u.reply,
                "timestamp": now,
                "gateway": self.helo,
            }
            report.evidence.append((u.address, sign_evidence(evidence, self.ctx.evidence_key)))

    async def _try_mx_host(
        self,
        record: MessageRecord,
        domain: str,
        route: MxRoute,
        addresses: list[str],
        body: bytes,
        report: DomainReport,
    ) -> list[_MxTry]:
        try:
            ips = await self.ctx.resolver.addresses(route.host)
        except DnsPermanentError as exc:
            return [_MxTry(MxOutcome.PERMANENT, f"{route.host}: {exc}")]
        except DnsTemporaryError as exc:
            return [_MxTry(MxOutcome.TEMPORARY, f"{route.host}: {exc}")]
        if not ips:
            return [_MxTry(MxOutcome.PERMANENT, f"{route.host}: has no address records")]
        tried = []
        for ip in ips:
            t = await self._try_address(record, domain, route, ip, addresses, body, report)
            tried.append(t)
            if t.outcome is MxOutcome.TRANSACTION:
                break
        return tried

    async def _try_address(
        self,
        record: MessageRecord,
        domain: str,
        route: MxRoute,
        ip: str,
        addresses: list[str],
        body: bytes,
        report: DomainReport,
    ) -> _MxTry:
        port = self.settings.port
        key = (route.host, ip, port, route.policy_key)
        attempt: dict = {
            "domain": domain,
            "mx": route.host,
            "ip": ip,
            "route_method": route.method.value,
        }
        report.attempts.append(attempt)

        async def opener() -> SmtpConnection:
            return await SmtpConnection.open(
                route.host,
                ip,
                port,
                helo=self.helo,
                tls_context=self.tls_context
                if route.method.authenticated
                else self.relaxed_context,
                connect_timeout=self.settings.connect_timeout,
                command_timeout=self.settings.command_timeout,
                tls_required=route.method.authenticated,
            )

        for _ in range(2):
            try:
                conn, reused = await self.pool.acquire(key, opener)
            except InsecureRoute as exc:
                attempt.update(outcome="insecure", reply=exc.reason)
                log.warning("message %s: %s", record.id, exc.reason)
                return _MxTry(MxOutcome.INSECURE, exc.reason, error=exc)
            except SmtpReplyError as exc:
                attempt.update(outcome="refused", reply=exc.line)
                outcome = MxOutcome.PERMANENT if exc.permanent else MxOutcome.TEMPORARY
                return _MxTry(outcome, exc.reason, error=exc)
            except ConnectError as exc:
                attempt.update(outcome="unreachable", reply=exc.reason)
                return _MxTry(MxOutcome.TEMPORARY, exc.reason, error=exc)
            if conn.tls is not None:
                attempt.update(
                    tls_version=conn.tls.version,
                    cipher=conn.tls.cipher,
                    cert_subject=conn.tls.cert_subject,
                    cert_fingerprint=conn.tls.cert_fingerprint,
                )
            if not route.method.authenticated:
                log.warning(
                    "message %s: RELAXED delivery to %s [%s] (%s), allowed by the account",
                    record.id,
                    route.host,
                    ip,
                    conn.tls.version if conn.tls else "plaintext",
                )
            if record.requiretls and "REQUIRETLS" not in conn.extensions:
                # RFC 8689 §5: never hand a REQUIRETLS message to a server that would not
                # keep the promise on its next hop.
                await self.pool.release(key, conn)
                reason = f"{route.host} [{ip}]: does not support REQUIRETLS"
                attempt.update(outcome="insecure", reply=reason)
                return _MxTry(
                    MxOutcome.INSECURE, reason, error=InsecureRoute(reason, enhanced="5.7.30")
                )
            try:
                result = await conn.send(
                    record.mail_from,
                    addresses,
                    body,
                    smtputf8=record.smtputf8,
                    eightbit=not body.isascii(),
                    requiretls=record.requiretls,
                )
            except ConnectError as exc:
                await self.pool.discard(key, conn)
                if reused:
                    continue  # the idle connection had gone stale: once more, fresh
                attempt.update(outcome="unreachable", reply=exc.reason)
                return _MxTry(MxOutcome.TEMPORARY, exc.reason, error=exc)
            await self.pool.release(key, conn)
            replies = sorted({str(r) for r in result.recipients.values()})
            attempt.update(outcome="transaction", reply=" | ".join(replies)[:2000])
            return _MxTry(MxOutcome.TRANSACTION, result=result)
        attempt.update(outcome="unreachable", reply="connection lost twice")
        return _MxTry(MxOutcome.TEMPORARY, f"{route.host} [{ip}]: connection lost")
