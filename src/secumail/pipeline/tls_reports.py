"""Sending TLS reports (RFC 8460): once a day, per policy domain that publishes a `rua`.

The deliver stage counts every TLS session by recipient policy domain, policy and result
(`store.routing`). For each finished UTC day, this builds the aggregate report (§4) and
sends it to each `rua` in `_smtp._tls.<domain>`: `mailto:` as a DKIM-signed report mail
(§5.3) through the normal pipeline, with `TLS-Required: No` (§5.1: a report about broken
TLS must be able to reach its domain, and holds no personal data); `https:` by POST of
the gzipped report (§5.2). Each (day, domain) is reported once.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from secumail.errors import DeliveryError, DnsError
from secumail.mail.ids import new_message_id
from secumail.mail.tlsrpt import (
    FailureDetail,
    PolicyType,
    ReportPolicy,
    TlsReport,
    TlsReportBuilder,
    TlsRptError,
    gzip_report,
    parse_tlsrpt_record,
    report_message,
)
from secumail.net.dns import Resolver
from secumail.net.https_client import HttpsError, request
from secumail.net.tls import verifying_client_context
from secumail.pipeline.intake import Intake
from secumail.store.records import NewMessage
from secumail.store.routing import RoutingStore

log = logging.getLogger("secumail.tlsrpt")


class TlsReporter:
    def __init__(
        self,
        routing: RoutingStore,
        resolver: Resolver,
        intake: Intake,
        *,
        gateway_domain: str,
        trust_file: Path | None,
        https_port: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.routing = routing
        self.resolver = resolver
        self.intake = intake
        self.gateway_domain = gateway_domain
        self.ssl_context = verifying_client_context(trust_file)
        self.https_port = https_port  # tests: where rua https endpoints listen
        self.timeout = timeout

    async def send_due(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """Report every finished day not reported yet; (day, domain, outcome) each."""
        today = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
        return [
            await self.send(day, domain) for day, domain in await self.routing.report_days(today)
        ]

    async def send(self, day: str, domain: str) -> tuple[str, str, str]:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        builder = TlsReportBuilder(
            self.gateway_domain,
            f"mailto:postmaster@{self.gateway_domain}",
            start,
            start + timedelta(days=1),
        )
        for row in await self.routing.results(day):
            if row["policy_domain"] != domain:
                continue
            policy = _policy(row)
            if row["result_type"]:
                detail = FailureDetail(
                    row["result_type"],
                    receiving_mx_hostname=row["mx_host"],
                    receiving_ip=row["receiving_ip"],
                    failure_reason_code=row["detail"][:200],
                )
                builder.add_failure(policy, detail, row["count"])
            else:
                builder.add_success(policy, row["count"])
        report_id = f"{day}.{secrets.token_hex(8)}@{self.gateway_domain}"
        report = builder.build(domain, report_id)
        try:
            ruas = parse_tlsrpt_record(await self.resolver.txt(f"_smtp._tls.{domain}"))
        except (DnsError, TlsRptError) as exc:
            ruas = []
            log.warning("TLS report for %s: no usable TLSRPT record (%s)", domain, exc)
        outcomes = []
        for rua in ruas:
            try:
                outcomes.append(await self._send_to(rua, report, domain, report_id, start))
            except DeliveryError as exc:
                outcomes.append(f"{rua}: failed ({exc.reason})")
        outcome = "; ".join(outcomes) or "no rua published"
        await self.routing.mark_reported(day, domain, outcome)
        log.info("TLS report %s for %s: %s", day, domain, outcome)
        return day, domain, outcome

    async def _send_to(
        self, rua: str, report: TlsReport, domain: str, report_id: str, start: datetime
    ) -> str:
        if rua.startswith("mailto:"):
            to = rua[len("mailto:") :].split("?", 1)[0]
            qid = new_message_id()
            sender = f"tlsrpt-noreply@{self.gateway_domain}"
            msg = report_message(
                report,
                policy_domain=domain,
                submitter=self.gateway_domain,
                from_addr=sender,
                to_addrs=[to],
                message_id=f"<{qid}@{self.gateway_domain}>",
                date=datetime.now(UTC),
            )
            msg["TLS-Required"] = "No"
            body = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
            await self.intake.accept(
                NewMessage(
                    qid,
                    None,
                    sender,
                    [to],
                    len(body),
                    header_from=sender,
                    message_id_header=msg["Message-ID"],
                    tls_required_no=True,
                ),
                body,
                admission=False,
            )
            return f"{rua}: queued as {qid}"
        if rua.startswith("https:"):
            host = rua.split("/")[2].split(":")[0]
            connect_to = None
            if self.https_port is not None:
                addresses = await self.resolver.addresses(host)
                connect_to = (addresses[0], self.https_port) if addresses else None
            try:
                status, _h, _b = await request(
                    "POST",
                    rua,
                    body=gzip_report(report.to_json()),
                    content_type="application/tlsrpt+gzip",
                    ssl_context=self.ssl_context,
                    timeout=self.timeout,
                    connect_to=connect_to,
                )
            except HttpsError as exc:
                raise DeliveryError(str(exc), permanent=False) from exc
            if not 200 <= status < 300:
                raise DeliveryError(f"HTTP {status}", permanent=False)
            return f"{rua}: HTTP {status}"
        return f"{rua}: unsupported scheme"


def _policy(row: sqlite3.Row) -> ReportPolicy:
    lines = tuple(json.loads(row["policy_string"]))
    policy_type = PolicyType(row["policy_type"])
    if policy_type is PolicyType.STS:
        mx = tuple(line.split(":", 1)[1].strip() for line in lines if line.startswith("mx:"))
    elif policy_type is PolicyType.TLSA:
        mx = (row["mx_host"],)
    else:
        mx = ()
    return ReportPolicy(policy_type, row["policy_domain"], lines, mx)
