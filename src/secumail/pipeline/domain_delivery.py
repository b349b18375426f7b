"""Delivering one message to the recipients of one domain, MX by MX, route by route.

Plans the routes (`RoutePlanner`), tries each MX address over its route
(`MxConnector`), and turns what happened into recipient updates, attempt records, signed
delivery evidence, TLS-report counters (RFC 8460) and the downgrade memory. Used by the
deliver stage; holds no state of its own between messages.
"""

from __future__ import annotations

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
from secumail.mail.secure_route import (
    DomainFate,
    MxOutcome,
    MxRoute,
    RouteMethod,
    conclude,
    null_mx_refusal,
)
from secumail.mail.status import RecipientStatus
from secumail.mail.tlsrpt import PolicyType
from secumail.mail.verp import bounce_address
from secumail.net.smtp_client import SmtpConnection, TlsDetails, TransactionResult
from secumail.pipeline.mx_connector import MxConnector
from secumail.pipeline.route_planner import DomainRoute, RoutePlanner
from secumail.pki.evidence import EvidenceKey, message_sha256, sign_evidence
from secumail.store.database import Op
from secumail.store.records import (
    Account,
    AttemptOutcome,
    DeliveryAttempt,
    MessageRecord,
    RecipientUpdate,
)
from secumail.store.routing import RoutingStore
from secumail.store.signing import SigningStore

log = logging.getLogger("secumail.deliver")

STRENGTHS = {m.value: m.strength for m in RouteMethod}


@dataclass
class DomainReport:
    updates: list[RecipientUpdate] = field(default_factory=list)
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (recipient, JWS)
    tlsrpt: list[Op] = field(default_factory=list)  # store ops counting TLS sessions
    remember: RouteMethod | None = None  # the secure method that carried the message

    def all(
        self,
        addresses: list[str],
        status: RecipientStatus,
        reply: str,
        enhanced: str,
        reasons: list[str] | None = None,
    ) -> DomainReport:
        event: dict[str, object] = {"reply": reply}
        if reasons:
            event["reasons"] = reasons
        # A recipient's attempt count grows only with a try that left attempt records (a
        # DNS failure or a downgrade deferral before any MX was chosen is an event, not
        # an attempt): so the count never exceeds what the message's attempt list shows.
        tried = bool(self.attempts)
        self.updates += [
            RecipientUpdate(a, status, reply, enhanced, count_attempt=tried, event=event)
            for a in addresses
        ]
        return self


# One attempt has two readings: what happened (`AttemptOutcome`, stored and shown) and what
# it means for the domain's fate (`MxOutcome`, for `secure_route.conclude`):
#   transaction → TRANSACTION      insecure → INSECURE      unreachable → TEMPORARY
#   refused     → PERMANENT on a 5xx reply, else TEMPORARY
#   rejected    → by the plan's reason: INSECURE for a policy refusal, PERMANENT for a
#                 host that does not exist, TEMPORARY for DNS trouble (`_ruled_out`).
@dataclass(slots=True)
class _MxTry:
    """One MX address tried: its attempt record and what it means for the domain."""

    attempt: DeliveryAttempt
    outcome: MxOutcome
    reason: str = ""
    result: TransactionResult | None = None
    error: DeliveryError | None = None


@dataclass(slots=True)
class _DomainRun:
    """One domain's delivery under way: what each MX try reads, and the report it adds to."""

    record: MessageRecord
    domain: str
    route: DomainRoute
    addresses: list[str]
    body: bytes
    report: DomainReport


@dataclass(slots=True)
class _OpenAttempt:
    """One MX address being tried, and what its attempt record has learnt so far."""

    domain: str
    mx: MxRoute
    ip: str
    policy: str | None = None  # what authenticated the route (MTA-STS policy id, TLSA record)
    tls: TlsDetails | None = None  # the last session's

    def end(
        self,
        outcome: AttemptOutcome,
        reply: str,
        fate: MxOutcome,
        reason: str = "",
        *,
        result: TransactionResult | None = None,
        error: DeliveryError | None = None,
    ) -> _MxTry:
        tls = self.tls
        attempt = DeliveryAttempt(
            self.domain,
            self.mx.host,
            outcome,
            reply,
            ip=self.ip,
            route_method=self.mx.method.value,
            policy=self.policy,
            tls_version=tls.version if tls is not None else None,
            cipher=tls.cipher if tls is not None else None,
            cert_subject=tls.cert_subject if tls is not None else None,
            cert_fingerprint=tls.cert_fingerprint if tls is not None else None,
        )
        return _MxTry(attempt, fate, reason, result, error)


class DomainDelivery:
    def __init__(
        self,
        planner: RoutePlanner,
        connector: MxConnector,
        routing: RoutingStore,
        signing: SigningStore,
        evidence_key: EvidenceKey,
        *,
        helo: str,
        memory_seconds: float,
        verp_key: bytes | None,
    ) -> None:
        self.planner = planner
        self.connector = connector
        self.routing = routing
        self.signing = signing
        self.evidence_key = evidence_key
        self.helo = helo
        self.memory_seconds = memory_seconds
        # None: no inbound MX to receive bounces, so the return path stays the sender's
        # own address (one transaction for all recipients of a domain, as before).
        self.verp_key = verp_key

    async def deliver(
        self,
        record: MessageRecord,
        account: Account | None,
        domain: str,
        addresses: list[str],
        body: bytes,
    ) -> DomainReport:
        report = DomainReport()
        try:
            route = await self.planner.route(
                domain,
                account=account,
                tls_required_no=record.tls_required_no,
                requiretls=record.requiretls,
            )
        except DnsPermanentError as exc:
            return report.all(addresses, RecipientStatus.BOUNCED, f"550 5.1.2 {exc}", "5.1.2")
        except DnsTemporaryError as exc:
            return report.all(addresses, RecipientStatus.DEFERRED, f"451 4.4.3 {exc}", "4.4.3")
        if route.answer.null_mx:
            return report.all(addresses, RecipientStatus.BOUNCED, *null_mx_refusal(domain))
        plan = route.plan
        reasons = [r.reason for r in plan.rejected]
        if route.sts.failure:
            reasons.append(route.sts.failure)
        if plan.downgrade:
            log.warning("message %s: %s", record.id, plan.downgrade)
            return report.all(
                addresses,
                RecipientStatus.DEFERRED,
                f"451 4.7.5 {plan.downgrade}",
                "4.7.5",
                [plan.downgrade],
            )
        run = _DomainRun(record, domain, route, addresses, body, report)
        outcomes = self._ruled_out(run)
        last_error: DeliveryError | None = None
        for mx in plan.routes:
            for ip in route.hosts[mx.host].addresses:
                t = await self._try_address(run, mx, ip)
                report.attempts.append(t.attempt)
                outcomes.append(t.outcome)
                if t.reason:
                    reasons.append(t.reason)
                if t.error is not None:
                    last_error = t.error
                if t.outcome is MxOutcome.TRANSACTION and t.result is not None:
                    self._from_transaction(report, addresses, t.result, mx)
                    self._sign_evidence(record, report, body, t.attempt)
                    if mx.method in (RouteMethod.DANE, RouteMethod.MTA_STS):
                        report.remember = mx.method
                    return report
        return self._without_transaction(report, domain, addresses, outcomes, reasons, last_error)

    def _ruled_out(self, run: _DomainRun) -> list[MxOutcome]:
        """Every MX the plan did not use is on record, with why (and counted for TLS reports
        when a policy refused it); returns what each means for the domain."""
        outcomes: list[MxOutcome] = []
        for rejected in run.route.plan.rejected:
            # A host that does not exist is a permanent problem; a policy refusal means insecure.
            if rejected.temporary:
                outcomes.append(MxOutcome.TEMPORARY)
            elif not rejected.result_type:
                outcomes.append(MxOutcome.PERMANENT)
            else:
                outcomes.append(MxOutcome.INSECURE)
            run.report.attempts.append(
                DeliveryAttempt(run.domain, rejected.host, AttemptOutcome.REJECTED, rejected.reason)
            )
            if rejected.result_type:
                self._count(run, None, rejected.host, "", rejected.result_type, rejected.reason)
        return outcomes

    def _without_transaction(
        self,
        report: DomainReport,
        domain: str,
        addresses: list[str],
        outcomes: list[MxOutcome],
        reasons: list[str],
        last_error: DeliveryError | None,
    ) -> DomainReport:
        fate = conclude(outcomes)
        if fate is DomainFate.REFUSED_INSECURE:
            # RFC 8689 §5: 5.7.30 when REQUIRETLS support was what was missing.
            enhanced = (
                "5.7.30" if last_error is not None and last_error.enhanced == "5.7.30" else "5.7.10"
            )
            reply = f"550 {enhanced} No secure route to {domain}: " + "; ".join(reasons)
            return report.all(addresses, RecipientStatus.REFUSED_INSECURE, reply, enhanced, reasons)
        if fate is DomainFate.BOUNCED:
            line = (last_error.line or last_error.reason) if last_error else "; ".join(reasons)
            enhanced = (last_error.enhanced if last_error else "") or "5.1.2"
            return report.all(
                addresses,
                RecipientStatus.BOUNCED,
                line or f"550 5.1.2 {domain}: no usable MX",
                enhanced,
                reasons,
            )
        text = "; ".join(reasons) or f"no mail server of {domain} could be reached"
        enhanced = (
            last_error.enhanced if last_error and last_error.enhanced.startswith("4") else "4.4.1"
        )
        return report.all(
            addresses, RecipientStatus.DEFERRED, f"451 {enhanced} {text}", enhanced, reasons
        )

    def _from_transaction(
        self, report: DomainReport, addresses: list[str], result: TransactionResult, route: MxRoute
    ) -> None:
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

    def _sign_evidence(
        self, record: MessageRecord, report: DomainReport, body: bytes, attempt: DeliveryAttempt
    ) -> None:
        """A signed evidence record for each recipient the remote server accepted in the
        transaction of `attempt`."""
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
                "mx_host": attempt.mx,
                "mx_ip": attempt.ip,
                "route": attempt.route_method,
                "route_policy": attempt.policy,
                "tls_version": attempt.tls_version,
                "tls_cipher": attempt.cipher,
                "peer_cert_sha256": attempt.cert_fingerprint,
                "remote_reply": u.reply,
                "timestamp": now,
                "gateway": self.helo,
            }
            report.evidence.append((u.address, sign_evidence(evidence, self.evidence_key)))

    # -- TLS reporting (RFC 8460) ----------------------------------------------------
    def _policy_of(self, route: DomainRoute, mx: MxRoute | None) -> tuple[str, list[str]]:
        if mx is not None and mx.method is RouteMethod.DANE:
            return PolicyType.TLSA.value, [str(r) for r in mx.tlsa]
        if route.sts.policy is not None:
            return PolicyType.STS.value, route.sts.policy.policy_string()
        return PolicyType.NO_POLICY_FOUND.value, []

    def _count(
        self,
        run: _DomainRun,
        mx: MxRoute | None,
        host: str,
        ip: str,
        result_type: str,
        detail: str,
    ) -> None:
        """One TLS session (`result_type` "") or one failure of it, for the domain's report."""
        policy_type, policy_string = self._policy_of(run.route, mx)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        run.report.tlsrpt.append(
            self.routing.count_result_op(
                day, run.domain, policy_type, policy_string, host, ip, result_type, detail
            )
        )

    # -- one address -------------------------------------------------------------------
    async def _try_address(self, run: _DomainRun, mx: MxRoute, ip: str) -> _MxTry:
        """Connect to one MX address over its route, then hand the message over."""
        at = _OpenAttempt(
            run.domain,
            mx,
            ip,
            policy=f"mta-sts id={mx.policy_id}" if mx.method is RouteMethod.MTA_STS else None,
        )
        for _ in range(2):
            try:
                conn, reused, authenticated_by = await self.connector.acquire(mx, ip)
            except (InsecureRoute, SmtpReplyError, ConnectError) as exc:
                return self._not_connected(run, at, exc)
            self._connected(run, at, conn, reused, authenticated_by)
            if run.record.requiretls and "REQUIRETLS" not in conn.extensions:
                # RFC 8689 §5: never hand a REQUIRETLS message to a server that would not
                # keep the promise on its next hop.
                await self.connector.pool.release(self.connector.key(mx, ip), conn)
                reason = f"{mx.host} [{ip}]: does not support REQUIRETLS"
                error = InsecureRoute(reason, enhanced="5.7.30")
                return at.end(
                    AttemptOutcome.INSECURE, reason, MxOutcome.INSECURE, reason, error=error
                )
            tried = await self._transaction(run, at, conn, reused)
            if tried is not None:
                return tried
        return at.end(
            AttemptOutcome.UNREACHABLE,
            "connection lost twice",
            MxOutcome.TEMPORARY,
            f"{mx.host} [{ip}]: connection lost",
        )

    def _not_connected(
        self, run: _DomainRun, at: _OpenAttempt, exc: InsecureRoute | SmtpReplyError | ConnectError
    ) -> _MxTry:
        """The connection (or its TLS, or the greeting and EHLO) failed."""
        if isinstance(exc, InsecureRoute):
            result_type = exc.rfc8460 or "validation-failure"
            self._count(run, at.mx, at.mx.host, at.ip, result_type, exc.reason)
            log.warning("message %s: %s", run.record.id, exc.reason)
            return at.end(
                AttemptOutcome.INSECURE, exc.reason, MxOutcome.INSECURE, exc.reason, error=exc
            )
        if isinstance(exc, SmtpReplyError):
            fate = MxOutcome.PERMANENT if exc.permanent else MxOutcome.TEMPORARY
            return at.end(AttemptOutcome.REFUSED, exc.line, fate, exc.reason, error=exc)
        return at.end(
            AttemptOutcome.UNREACHABLE, exc.reason, MxOutcome.TEMPORARY, exc.reason, error=exc
        )

    def _connected(
        self,
        run: _DomainRun,
        at: _OpenAttempt,
        conn: SmtpConnection,
        reused: bool,
        authenticated_by: str,
    ) -> None:
        """Note the session on the attempt (and a new one for TLS reports)."""
        if authenticated_by:
            at.policy = authenticated_by
        if conn.tls is not None:
            at.tls = conn.tls
        if not reused:
            self._count(run, at.mx, at.mx.host, at.ip, "", "")
        if not at.mx.method.authenticated:
            log.warning(
                "message %s: RELAXED delivery to %s [%s] (%s), allowed by the account",
                run.record.id,
                at.mx.host,
                at.ip,
                conn.tls.version if conn.tls else "plaintext",
            )

    async def _transaction(
        self, run: _DomainRun, at: _OpenAttempt, conn: SmtpConnection, reused: bool
    ) -> _MxTry | None:
        """The SMTP transaction over `conn`; None when a reused idle connection turned out
        to have gone stale (then the caller tries once more, fresh)."""
        key = self.connector.key(at.mx, at.ip)
        try:
            result, lost = await self._send(run, conn)
        except ConnectError as exc:
            await self.connector.pool.discard(key, conn)
            if reused:
                return None
            return at.end(
                AttemptOutcome.UNREACHABLE, exc.reason, MxOutcome.TEMPORARY, exc.reason, error=exc
            )
        if lost:
            await self.connector.pool.discard(key, conn)
        else:
            await self.connector.pool.release(key, conn)
        replies = sorted({str(r) for r in result.recipients.values()})
        return at.end(
            AttemptOutcome.TRANSACTION,
            " | ".join(replies)[:2000],
            MxOutcome.TRANSACTION,
            result=result,
        )

    async def _send(self, run: _DomainRun, conn: SmtpConnection) -> tuple[TransactionResult, bool]:
        """The message to the domain's recipients over `conn`: (the replies, whether the
        connection was lost on the way). Raises ConnectError only before any transaction
        finished (then nothing was handed over and the whole domain can be tried again).

        Each recipient gets its own transaction, with its own return path (`mail.verp`:
        a late bounce then names the message and the recipient, whatever its body says);
        a notice keeps the null reverse-path (RFC 3461 §6.2, RFC 5321 §4.5.5), all its
        recipients in one transaction."""
        record, body = run.record, run.body
        eightbit = not body.isascii()
        if not record.mail_from or self.verp_key is None:
            one = await conn.send(
                record.mail_from,
                run.addresses,
                body,
                smtputf8=record.smtputf8,
                eightbit=eightbit,
                requiretls=record.requiretls,
            )
            return one, False
        verp_key = self.verp_key
        merged = TransactionResult()
        for i, address in enumerate(run.addresses):
            if i and not conn.usable:
                # The server broke the connection after a transaction (a failed RSET):
                # the recipients still to go wait for the next round.
                lost = Reply(451, "4.4.2", "connection lost between transactions")
                merged.recipients.update(dict.fromkeys(run.addresses[i:], lost))
                return merged, True
            try:
                one = await conn.send(
                    bounce_address(verp_key, record.id, address, self.helo),
                    [address],
                    body,
                    smtputf8=record.smtputf8,
                    eightbit=eightbit,
                    requiretls=record.requiretls,
                )
            except ConnectError as exc:
                if not i:
                    raise
                # The earlier transactions are done (and must not be repeated): only the
                # rest wait for the next round.
                lost = Reply(451, "4.4.2", f"connection lost: {exc.reason}")
                merged.recipients.update(dict.fromkeys(run.addresses[i:], lost))
                return merged, True
            merged.recipients.update(one.recipients)
            merged.data_reply = one.data_reply or merged.data_reply
        return merged, False

    async def remember(self, domain: str, method: RouteMethod) -> None:
        await self.routing.remember(
            domain, method.value, method.strength, self.memory_seconds, STRENGTHS
        )
