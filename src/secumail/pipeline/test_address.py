"""The inbound MX's test address: anyone may write to it and learn how their mail looks.

`<inbound.test_address>@<server.hostname>` (`pipeline.inbound_mx.InboundMx` dispatches):
- Without TLS the message is refused at the end of DATA (`mail.test_report.PLAINTEXT_REFUSED`,
  554 5.7.10, Dutch and English), so the sender's own server bounces that explanation to
  them. Nothing is queued or kept.
- Over TLS, SPF, DKIM and DMARC are checked (`pipeline.sender_auth`, off the event loop,
  through the gateway's resolver) and one short report (`mail.test_report`) is queued to
  the envelope sender, as a new message from the null sender, so route, sign and deliver
  apply the secure-delivery rules like any other message; queued before the 250.
- Never an amplifier: one reply per message, only to the envelope sender, never to <>,
  never to an automatic message (RFC 3834 §2), only when the sender's domain passed SPF
  or an aligned DKIM signature passed (`mail.sender_auth.reply_allowed`), and at most
  `inbound.test_replies_per_domain_per_hour` / `..._per_network_per_hour`
  (`store.test_replies`). A message that gets no reply is answered 250 like the others
  (no help for probing), logged without addresses or content and counted
  (`test_address_dropped:<reason>`, `secumail queue`).
Settings: server.hostname, inbound.test_address, inbound.test_replies_per_*.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from secumail.errors import AdmissionRefused
from secumail.mail import reply as R
from secumail.mail.address import Address
from secumail.mail.headers import HeaderError, parse_header_section
from secumail.mail.ids import new_message_id
from secumail.mail.ip_scope import client_network
from secumail.mail.reply import Reply
from secumail.mail.sender_auth import reply_allowed
from secumail.mail.test_report import (
    PLAINTEXT_REFUSED,
    ConnectionFacts,
    TestReportRequest,
    build_test_report,
    sane_message_id,
)
from secumail.net.smtp_server import Envelope
from secumail.pipeline.intake import Intake
from secumail.pipeline.sender_auth import AuthQuestion, SenderAuthenticator, org_domain
from secumail.store.counters import Counters
from secumail.store.records import NewMessage
from secumail.store.test_replies import ReplyRateLimits

log = logging.getLogger("secumail.inbound")

DROPPED = "test_address_dropped:"  # counter prefix
# The same answer whether a report goes out or not: no oracle for spoofers.
ACCEPTED = Reply(
    250,
    "2.0.0",
    "Ok: test message received; a report goes to an authenticated sender,"
    " over a secure route only",
)


class TestAddressIntake:
    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        intake: Intake,
        authenticator: SenderAuthenticator,
        limits: ReplyRateLimits,
        counters: Counters,
        *,
        local_part: str,
        hostname: str,
        org_domain: Callable[[str], str] = org_domain,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.intake = intake
        self.authenticator = authenticator
        self.limits = limits
        self.counters = counters
        self.local_part = local_part.lower()
        self.hostname = hostname.lower().rstrip(".")
        self.org_domain = org_domain
        self.clock = clock

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.hostname}"

    def takes(self, address: Address) -> bool:
        """Whether ``address`` is the test address (the local part case-insensitively)."""
        return address.is_mailbox(self.local_part, self.hostname)

    async def receive(self, envelope: Envelope, message: bytes) -> Reply:
        """Refuse a plaintext message, or answer 250 with a report queued (or not, counted)."""
        if envelope.tls_version is None:
            await self._count("plaintext", envelope.client_ip)
            return PLAINTEXT_REFUSED
        sender = envelope.mail_from
        if sender is None:
            return await self._drop("null_sender", envelope.client_ip)
        try:
            section = parse_header_section(message)
        except HeaderError:
            return await self._drop("malformed", envelope.client_ip)
        auto = [v.strip().lower() for v in section.get_all("Auto-Submitted")]
        if any(v.split(";")[0].strip() != "no" for v in auto):  # RFC 3834 §2
            return await self._drop("auto_submitted", envelope.client_ip)
        auth = await self.authenticator.check_async(
            AuthQuestion(message, envelope.client_ip, str(sender), envelope.helo)
        )
        if not reply_allowed(sender.domain, auth, self.org_domain):
            return await self._drop("unverified_sender", envelope.client_ip)
        if await self.intake.full():
            return R.INTAKE_FULL
        now = self.clock()
        hit = await self.limits.reserve(sender.domain, client_network(envelope.client_ip), now)
        if hit is not None:
            return await self._drop(hit.value, envelope.client_ip)
        ids = section.get_all("Message-ID")
        report_id = new_message_id()
        request = TestReportRequest(
            hostname=self.hostname,
            from_address=self.address,
            to=sender,
            mail_from_domain=sender.domain,
            facts=ConnectionFacts(
                envelope.client_ip, envelope.helo, envelope.tls_version, envelope.tls_cipher
            ),
            auth=auth,
            message_id=f"<{report_id}@{self.hostname}>",
            in_reply_to=sane_message_id(ids[0]) if len(ids) == 1 else None,
            date=now,
        )
        body = build_test_report(request, self.org_domain)
        try:
            await self.intake.accept(
                NewMessage(
                    id=report_id,
                    account_id=None,  # the gateway's own mail: signed with its domain
                    mail_from="",  # null sender: never bounced back (RFC 3834 §4)
                    recipients=[str(sender)],
                    size=len(body),
                    header_from=self.address,
                    message_id_header=request.message_id,
                    smtputf8=not str(sender).isascii(),
                ),
                body,
            )
        except AdmissionRefused:
            return R.INTAKE_FULL
        log.info(
            "test report %s queued",
            report_id,
            extra={"fields": {"client": envelope.client_ip, "tls": envelope.tls_version}},
        )
        return ACCEPTED

    async def _drop(self, reason: str, client_ip: str) -> Reply:
        await self._count(reason, client_ip)
        return ACCEPTED

    async def _count(self, reason: str, client_ip: str) -> None:
        log.warning("test message not answered", extra={"fields": {"reason": reason, "client": client_ip}})
        await self.counters.bump(DROPPED + reason)
