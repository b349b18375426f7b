"""The inbound MX's policy: which recipients it takes, and who reads what came for them.

Implements `net.smtp_server.SubmissionPolicy` without AUTH, dispatching by the kind of
address: bounce addresses (`bounce+…@server.hostname`) to `pipeline.bounce_intake`, the
TLS report address (`<inbound.tlsrpt_address>@server.hostname`) to
`pipeline.tlsrpt_intake`, the test address (`<inbound.test_address>@server.hostname`) to
`pipeline.test_address`. Everything else is 550 5.1.1 (never a relay). One message may
name several kinds of recipient; each reader gets the message and its own recipients.
The test address answers first: its refusal of a plaintext message (554 5.7.10) or a
full queue (451) is the answer for the whole transaction, before anything else is read.
Settings: server.hostname, inbound.*.
"""

from __future__ import annotations

import dataclasses

from secumail.mail.address import Address
from secumail.mail.reply import Reply
from secumail.net.smtp_server import AuthOutcome, Envelope, Principal
from secumail.pipeline.bounce_intake import BounceIntake
from secumail.pipeline.test_address import TestAddressIntake
from secumail.pipeline.tlsrpt_intake import TlsReportIntake

REPORT_ACCEPTED = Reply(250, "2.0.0", "Ok: report received")


class InboundMx:
    authenticated_relay = False

    def __init__(
        self,
        bounces: BounceIntake,
        tls_reports: TlsReportIntake | None,
        test_address: TestAddressIntake | None = None,
    ) -> None:
        self.bounces = bounces
        self.tls_reports = tls_reports
        self.test_address = test_address

    async def authenticate(
        self, username: str, password: str, client_ip: str
    ) -> tuple[AuthOutcome, Principal | None]:
        return AuthOutcome.FAILED, None  # never asked: the session offers no AUTH

    async def check_sender(
        self, principal: Principal | None, address: Address | None
    ) -> Reply | None:
        # Bounces come from <> (RFC 5321 §4.5.5), reports and test messages from anyone
        # (RFC 8460 §5.3).
        return None

    async def check_recipient(self, principal: Principal | None, address: Address) -> Reply | None:
        if self._is_report_address(address) or self._is_test_address(address):
            return None
        return await self.bounces.check_recipient(principal, address)

    async def admission(self) -> Reply | None:
        return await self.bounces.admission()

    async def accept(
        self, principal: Principal | None, envelope: Envelope, message: bytes
    ) -> Reply:
        tests = [a for a in envelope.rcpt_to if self._is_test_address(a)]
        reports = [a for a in envelope.rcpt_to if self._is_report_address(a)]
        bounces = [
            a
            for a in envelope.rcpt_to
            if not self._is_report_address(a) and not self._is_test_address(a)
        ]
        answer = REPORT_ACCEPTED
        if tests and self.test_address is not None:
            answer = await self.test_address.receive(
                dataclasses.replace(envelope, rcpt_to=tests), message
            )  # once per message
            if not answer.is_positive:
                return answer
        if reports and self.tls_reports is not None:
            await self.tls_reports.receive(message, envelope.client_ip)  # once per message
        if bounces:
            return await self.bounces.accept(
                principal, dataclasses.replace(envelope, rcpt_to=bounces), message
            )
        return answer if tests else REPORT_ACCEPTED

    def _is_test_address(self, address: Address) -> bool:
        return self.test_address is not None and self.test_address.takes(address)

    def _is_report_address(self, address: Address) -> bool:
        return self.tls_reports is not None and self.tls_reports.takes(address)
