"""The inbound MX's TLS report reader: reports (RFC 8460) sent to the gateway's own domain.

Other MTAs find ``_smtp._tls.<server.hostname>`` (``rua=mailto:<inbound.tlsrpt_address>@
<server.hostname>``) and mail their daily report there (§5.3). The report is read in
memory, off the event loop (`mail.tlsrpt_mail.read_report_mail`: the attachment, gzip undone
under a hard cap, the JSON checked) and only its metadata is kept
(`store.tls_reports_received`); the mail and the JSON are never stored. A report sent
twice (same organization, same report-id) is kept once; a client network keeps at most
`inbound.tlsrpt_per_client_per_day` reports a day (`store.tls_reports_received`). A mail
without a readable report
(no report part, unreadable, over the cap) is answered 250 all the same, logged without
content (`tls report dropped`, with the reason) and counted (`tlsrpt_dropped:<reason>`,
shown by `secumail queue`).
Settings: server.hostname, inbound.tlsrpt_address, inbound.tlsrpt_per_client_per_day.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from secumail.mail.address import Address
from secumail.mail.ip_scope import client_network
from secumail.mail.tlsrpt import TlsReport
from secumail.mail.tlsrpt_mail import TlsReportMailError, read_report_mail
from secumail.store.counters import Counters
from secumail.store.tls_reports_received import Kept, TlsReportsReceived

log = logging.getLogger("secumail.inbound")

DROPPED = "tlsrpt_dropped:"  # counter prefix


class TlsReportIntake:
    def __init__(
        self,
        reports: TlsReportsReceived,
        counters: Counters,
        *,
        local_part: str,
        hostname: str,
        per_client_per_day: int = 0,
        read: Callable[[bytes], TlsReport] = read_report_mail,
    ) -> None:
        self.reports = reports
        self.counters = counters
        self.local_part = local_part.lower()
        self.hostname = hostname.lower().rstrip(".")
        self.per_client_per_day = per_client_per_day
        self.read = read

    def takes(self, address: Address) -> bool:
        """Whether ``address`` is the report address (the local part case-insensitively)."""
        return address.is_mailbox(self.local_part, self.hostname)

    async def receive(self, message: bytes, client_ip: str) -> None:
        """Read the report in ``message`` and keep its metadata, or count why not."""
        try:
            # CPU-bound (MIME, inflating up to the cap, JSON): off the loop.
            report = await asyncio.to_thread(self.read, message)
        except TlsReportMailError as exc:
            return await self._drop(exc.reason, client_ip)
        except Exception:  # a reader bug on hostile input: logged, counted, never a crash
            log.exception("tls report reader failed")
            return await self._drop("unreadable", client_ip)
        kept = await self.reports.add(
            report,
            client_network=client_network(client_ip),
            per_client_per_day=self.per_client_per_day,
        )
        if kept is not Kept.KEPT:
            return await self._drop(str(kept), client_ip)
        log.info(
            "tls report received",
            extra={"fields": {"policies": len(report.policies), "client": client_ip}},
        )
        return None

    async def _drop(self, reason: str, client_ip: str) -> None:
        log.warning("tls report dropped", extra={"fields": {"reason": reason, "client": client_ip}})
        await self.counters.bump(DROPPED + reason)
