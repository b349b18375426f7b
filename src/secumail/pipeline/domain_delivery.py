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
from secumail.mail.secure_route import DomainFate, MxOutcome, MxRoute, RouteMethod, conclude
from secumail.mail.status import RecipientStatus
from secumail.mail.tlsrpt import PolicyType
from secumail.net.smtp_client import TransactionResult
from secumail.pipeline.mx_connector import MxConnector
from secumail.pipeline.route_planner import DomainRoute, RoutePlanner
from secumail.pki.evidence import EvidenceKey, message_sha256, sign_evidence
from secumail.store.records import Account, MessageRecord, RecipientUpdate
from secumail.store.routing import RoutingStore
from secumail.store.signing import SigningStore

log = logging.getLogger("secumail.deliver")

STRENGTHS = {m.value: m.strength for m in RouteMethod}


@dataclass
class DomainReport:
    updates: list[RecipientUpdate] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (recipient, JWS)
    tlsrpt: list = field(default_factory=list)  # store ops counting TLS sessions
    remember: RouteMethod | None = None  # the secure method that carried the message

    def all(
        self,
        addresses: list[str],
        status: RecipientStatus,
        reply: str,
        enhanced: str,
        reasons: list[str] | None = None,
    ) -> DomainReport:
        event: dict = {"reply": reply}
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


@dataclass
class _MxTry:
    outcome: MxOutcome
    reason: str = ""
    result: TransactionResult | None = None
    error: DeliveryError | None = None


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
    ) -> None:
        self.planner = planner
        self.connector = connector
        self.routing = routing
        self.signing = signing
        self.evidence_key = evidence_key
        self.helo = helo
        self.memory_seconds = memory_seconds

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
            reply = f"556 5.1.10 Domain {domain} does not accept mail (null MX, RFC 7505)"
            return report.all(addresses, RecipientStatus.BOUNCED, reply, "5.1.10")
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
        # A host that does not exist is a permanent problem; a policy refusal means insecure.
        outcomes = [
            MxOutcome.TEMPORARY
            if r.temporary
            else MxOutcome.PERMANENT
            if not r.result_type
            else MxOutcome.INSECURE
            for r in plan.rejected
        ]
        for rejected in plan.rejected:
            # Every decision is on record: which MX was not used, and why.
            report.attempts.append(
                {
                    "domain": domain,
                    "mx": rejected.host,
                    "outcome": "rejected",
                    "reply": rejected.reason,
                }
            )
            if rejected.result_type:
                self._count(
                    report,
                    route,
                    domain,
                    None,
                    rejected.host,
                    "",
                    rejected.result_type,
                    rejected.reason,
                )
        last_error: DeliveryError | None = None
        for mx in plan.routes:
            for ip in route.hosts[mx.host].addresses:
                t = await self._try_address(record, domain, route, mx, ip, addresses, body, report)
                outcomes.append(t.outcome)
                if t.reason:
                    reasons.append(t.reason)
                if t.error is not None:
                    last_error = t.error
                if t.outcome is MxOutcome.TRANSACTION and t.result is not None:
                    self._from_transaction(report, addresses, t.result, mx)
                    self._sign_evidence(record, report, body)
                    if mx.method in (RouteMethod.DANE, RouteMethod.MTA_STS):
                        report.remember = mx.method
                    return report
        return self._without_transaction(report, domain, addresses, outcomes, reasons, last_error)

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
                "route_policy": attempt.get("policy"),
                "tls_version": attempt.get("tls_version"),
                "tls_cipher": attempt.get("cipher"),
                "peer_cert_sha256": attempt.get("cert_fingerprint"),
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
        report: DomainReport,
        route: DomainRoute,
        domain: str,
        mx: MxRoute | None,
        host: str,
        ip: str,
        result_type: str,
        detail: str,
    ) -> None:
        policy_type, policy_string = self._policy_of(route, mx)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        report.tlsrpt.append(
            self.routing.count_result_op(
                day, domain, policy_type, policy_string, host, ip, result_type, detail
            )
        )

    # -- one address -------------------------------------------------------------------
    async def _try_address(
        self,
        record: MessageRecord,
        domain: str,
        route: DomainRoute,
        mx: MxRoute,
        ip: str,
        addresses: list[str],
        body: bytes,
        report: DomainReport,
    ) -> _MxTry:
        attempt: dict = {"domain": domain, "mx": mx.host, "ip": ip, "route_method": mx.method.value}
        if mx.method is RouteMethod.MTA_STS:
            attempt["policy"] = f"mta-sts id={mx.policy_id}"
        report.attempts.append(attempt)
        for _ in range(2):
            try:
                conn, reused, authenticated_by = await self.connector.acquire(mx, ip)
            except InsecureRoute as exc:
                attempt.update(outcome="insecure", reply=exc.reason)
                self._count(
                    report,
                    route,
                    domain,
                    mx,
                    mx.host,
                    ip,
                    exc.rfc8460 or "validation-failure",
                    exc.reason,
                )
                log.warning("message %s: %s", record.id, exc.reason)
                return _MxTry(MxOutcome.INSECURE, exc.reason, error=exc)
            except SmtpReplyError as exc:
                attempt.update(outcome="refused", reply=exc.line)
                outcome = MxOutcome.PERMANENT if exc.permanent else MxOutcome.TEMPORARY
                return _MxTry(outcome, exc.reason, error=exc)
            except ConnectError as exc:
                attempt.update(outcome="unreachable", reply=exc.reason)
                return _MxTry(MxOutcome.TEMPORARY, exc.reason, error=exc)
            if authenticated_by:
                attempt["policy"] = authenticated_by
            if conn.tls is not None:
                attempt.update(
                    tls_version=conn.tls.version,
                    cipher=conn.tls.cipher,
                    cert_subject=conn.tls.cert_subject,
                    cert_fingerprint=conn.tls.cert_fingerprint,
                )
            if not reused:
                self._count(report, route, domain, mx, mx.host, ip, "", "")
            if not mx.method.authenticated:
                log.warning(
                    "message %s: RELAXED delivery to %s [%s] (%s), allowed by the account",
                    record.id,
                    mx.host,
                    ip,
                    conn.tls.version if conn.tls else "plaintext",
                )
            if record.requiretls and "REQUIRETLS" not in conn.extensions:
                # RFC 8689 §5: never hand a REQUIRETLS message to a server that would not
                # keep the promise on its next hop.
                await self.connector.pool.release(self.connector.key(mx, ip), conn)
                reason = f"{mx.host} [{ip}]: does not support REQUIRETLS"
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
                await self.connector.pool.discard(self.connector.key(mx, ip), conn)
                if reused:
                    continue  # the idle connection had gone stale: once more, fresh
                attempt.update(outcome="unreachable", reply=exc.reason)
                return _MxTry(MxOutcome.TEMPORARY, exc.reason, error=exc)
            await self.connector.pool.release(self.connector.key(mx, ip), conn)
            replies = sorted({str(r) for r in result.recipients.values()})
            attempt.update(outcome="transaction", reply=" | ".join(replies)[:2000])
            return _MxTry(MxOutcome.TRANSACTION, result=result)
        attempt.update(outcome="unreachable", reply="connection lost twice")
        return _MxTry(MxOutcome.TEMPORARY, f"{mx.host} [{ip}]: connection lost")

    async def remember(self, domain: str, method: RouteMethod) -> None:
        await self.routing.remember(
            domain, method.value, method.strength, self.memory_seconds, STRENGTHS
        )
