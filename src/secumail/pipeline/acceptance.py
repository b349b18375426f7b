"""Accepting a message from a customer, whichever door it came in (SMTP or the REST API).

One set of rules: the envelope sender and the single From: header must be in a verified
domain of the account (closed network); suppressed recipients are refused; size and
recipient limits hold; then the intake makes it durable. A refusal carries both its SMTP
reply (code, enhanced code) and an HTTP status, so each door answers in its own terms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from secumail.errors import AdmissionRefused, NotFound, ScannerUnavailable, SecumailError
from secumail.mail.address import Address
from secumail.mail.headers import (
    HeaderError,
    HeaderSection,
    injected_field,
    originator_domains,
    parse_header_section,
    single_from_address,
)
from secumail.mail.ids import new_message_id
from secumail.mail.scan_result import ScanVerdict
from secumail.net.rspamd import SpamContext
from secumail.pipeline.intake import Intake
from secumail.pipeline.scanning import Scanner, refusal_reason, refused
from secumail.store.metadata import MetadataStore
from secumail.store.records import Account, NewMessage
from secumail.store.suppressions import SuppressionStore
from secumail.ttl_cache import TtlCache

log = logging.getLogger("secumail.submission")

DOMAIN_CACHE_TTL = 5.0
# Postfix's hopcount_limit: more Received fields than this is taken for a mail loop.
MAX_HOPS = 50


class Refusal(Exception):
    """Why a message (or one recipient) is not accepted."""

    def __init__(self, code: int, enhanced: str, text: str, *, http: int, field: str = "") -> None:
        super().__init__(text)
        self.code, self.enhanced, self.text, self.http, self.field = (
            code,
            enhanced,
            text,
            http,
            field,
        )


@dataclass(slots=True)
class Submission:
    account: Account
    mail_from: Address
    recipients: list[Address]
    message: bytes
    via: str  # "ESMTPSA" | "HTTPS"
    smtputf8: bool = False
    requiretls: bool = False
    metadata: dict[str, str] | None = None
    # The SMTP session checked the sender at MAIL and each recipient at RCPT a moment
    # ago (refusing those that failed): not checked again here.
    envelope_checked: bool = False


class MessageAcceptor:
    def __init__(
        self,
        store: MetadataStore,
        intake: Intake,
        suppressions: SuppressionStore,
        *,
        hostname: str,
        max_message_size: int,
        max_recipients: int,
        max_hops: int = MAX_HOPS,
        inline_scanner: Scanner | None = None,
    ) -> None:
        # `scan.inline`: infected or spam is refused here (554 5.7.1 / 422), never queued.
        self.inline_scanner = inline_scanner
        self.store = store
        self.intake = intake
        self.suppressions = suppressions
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.max_hops = max_hops
        self._domains: TtlCache[frozenset[str]] = TtlCache(DOMAIN_CACHE_TTL)

    async def verified_domains(self, account_id: str) -> frozenset[str]:
        return await self._domains.get(account_id, lambda: self.store.verified_domains(account_id))

    async def _scan_inline(self, sub: Submission, record: NewMessage) -> list[dict[str, Any]] | None:
        """The scan results to keep with the message, or a Refusal. A scanner that cannot
        be asked refuses nothing here: the message is queued and the `scan` stage waits
        for it (None: not scanned yet)."""
        assert self.inline_scanner is not None
        context = SpamContext(
            queue_id=record.id,
            mail_from=record.mail_from,
            recipients=record.recipients,
            user=sub.account.id,
        )
        try:
            results = await self.inline_scanner.scan(sub.message, context)
        except ScannerUnavailable:
            return None
        bad = refused(results)
        if bad is not None:
            enhanced = "5.6.0" if bad.verdict is ScanVerdict.OVER_LIMIT else "5.7.1"
            log.warning(
                "refused at acceptance by the scan",
                extra={"fields": {"engine": bad.engine, "verdict": str(bad.verdict)}},
            )
            raise Refusal(554, enhanced, f"Message refused: {refusal_reason(bad)}", http=422)
        return [r.as_dict() for r in results] or None  # no engine: nothing to claim

    async def check_sender(self, account_id: str, address: Address | None) -> None:
        if address is None:
            raise Refusal(
                550, "5.7.1", "Null sender not allowed for submission", http=422, field="from"
            )
        if address.domain not in await self.verified_domains(account_id):
            why = await self._not_sending_domain(account_id, address.domain)
            raise Refusal(550, "5.7.1", f"Sender domain {why}", http=403, field="from")

    async def _not_sending_domain(self, account_id: str, domain: str) -> str:
        """Why `domain` (not a verified domain of the account) may not send: added but
        not verified yet, which its owner can fix, or not the account's at all (another
        account's domain is not told apart from an unknown one). Looked up only after
        the cached verified-domain check failed: the accepted path costs nothing more."""
        try:
            known = await self.store.get_domain(domain)
        except NotFound:
            known = None
        if known is None or known.account_id != account_id or known.verified_at is not None:
            return f"{domain} is not a domain of your account"
        command = f"`secumail domain verify {domain}`" if len(domain) <= 100 else "domain verify"
        return (
            f"{domain} is added to your account but not verified yet: publish its "
            f"_secumail TXT record and run {command}"
        )

    async def check_recipient(self, account_id: str, address: Address) -> None:
        found = await self.suppressions.find(account_id, str(address))
        if found is not None:
            raise Refusal(
                550,
                "5.7.1",
                f"Recipient {address} is suppressed ({found.origin}: {found.reason}); remove the "
                "suppression to send again",
                http=422,
                field="to",
            )

    async def _check_headers(self, sub: Submission) -> tuple[HeaderSection, Address]:
        """The header rules for every door: no injected lines, no mail loop, and every
        originator (From, Sender, Resent-From, Resent-Sender, and addresses shown in
        their display names) in a verified domain of the account."""
        try:
            section = parse_header_section(sub.message)
            author = single_from_address(section)
            shown = originator_domains(section, author)
        except HeaderError as exc:
            raise Refusal(550, "5.7.1", f"Message refused: {exc}", http=422, field="from") from exc
        hops = len(section.get_all("Received"))
        if hops > self.max_hops:
            # RFC 5321 §6.3: a loop is detected by counting Received fields.
            raise Refusal(
                554,
                "5.4.6",
                f"Too many Received header fields ({hops}, limit {self.max_hops}): mail loop",
                http=422,
                field="Received",
            )
        injected = injected_field(section)
        if injected is not None:
            raise Refusal(
                554,
                "5.6.0",
                f"Header field {injected} holds CR, LF, NUL or another line break (raw or "
                "RFC 2047-encoded): refused as header injection",
                http=422,
                field=injected,
            )
        verified = await self.verified_domains(sub.account.id)
        for field, domain in shown:
            if domain not in verified:
                why = await self._not_sending_domain(sub.account.id, domain)
                raise Refusal(550, "5.7.1", f"{field}: domain {why}", http=403, field=field.lower())
        return section, author

    async def full(self) -> bool:
        return await self.intake.full()

    async def accept(self, sub: Submission) -> str:
        """Check everything and queue the message durably; its id. Raises Refusal."""
        if len(sub.message) > self.max_message_size:
            raise Refusal(552, "5.3.4", "Message size exceeds fixed maximum message size", http=413)
        if not sub.recipients:
            raise Refusal(554, "5.5.1", "No valid recipients", http=422, field="to")
        if len(sub.recipients) > self.max_recipients:
            raise Refusal(452, "4.5.3", "Too many recipients", http=422, field="to")
        if not sub.envelope_checked:
            await self.check_sender(sub.account.id, sub.mail_from)
            for rcpt in sub.recipients:
                await self.check_recipient(sub.account.id, rcpt)
        section, author = await self._check_headers(sub)
        message_id = new_message_id()
        trace = (
            f"Received: by {self.hostname} (Secumail) with {sub.via} id {message_id};\r\n"
            f"\t{format_datetime(datetime.now(UTC))}\r\n"
        ).encode("ascii")
        record = NewMessage(
            id=message_id,
            account_id=sub.account.id,
            mail_from=str(sub.mail_from),
            recipients=[str(r) for r in sub.recipients],
            size=len(sub.message),
            header_from=str(author),
            message_id_header=section.first("Message-ID"),
            subject=section.first("Subject") if sub.account.store_subject else None,
            smtputf8=sub.smtputf8,
            requiretls=sub.requiretls,
            api_metadata=sub.metadata or None,
            # RFC 8689 §4.1: with REQUIRETLS the TLS-Required field is ignored; without it,
            # "No" is honoured only for accounts allowed to relax TLS.
            tls_required_no=(
                not sub.requiretls
                and sub.account.allow_relaxed_tls
                and (section.first("TLS-Required") or "").strip().lower() == "no"
            ),
        )
        if self.inline_scanner is not None:
            record.scanned = await self._scan_inline(sub, record)
        try:
            await self.intake.accept(record, trace + sub.message)
        except AdmissionRefused as exc:
            raise Refusal(
                451, "4.3.2", "System busy: queue full, try again later", http=503
            ) from exc
        except SecumailError as exc:
            log.exception("cannot queue message from account %s", sub.account.id)
            raise Refusal(
                451, "4.3.0", "Temporary local problem, try again later", http=503
            ) from exc
        log.info(
            "accepted %s from account %s via %s: %d recipient(s), %d octets",
            message_id,
            sub.account.id,
            sub.via,
            len(record.recipients),
            record.size,
        )
        return message_id
