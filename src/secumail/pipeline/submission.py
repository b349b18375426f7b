"""The submission policy: who may relay, from which addresses, and accepting a message.

Implements `net.smtp_server.SubmissionPolicy` on top of the store and the intake:
- AUTH: username + password checked against the slow hash, failures throttled per
  client address and per username; a successful check is remembered briefly (keyed by
  an HMAC of the password) so clients that reconnect per message do not pay scrypt
  every time, while revocation still applies at once.
- Closed network: the envelope sender and the single From: header must be in a
  verified domain of the authenticated account (550 5.7.1 otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from secumail.errors import AdmissionRefused, SecumailError
from secumail.mail import reply as R
from secumail.mail.address import Address
from secumail.mail.headers import HeaderError, parse_header_section, single_from_address
from secumail.mail.ids import new_message_id
from secumail.mail.reply import Reply
from secumail.net.smtp_server import AuthOutcome, Envelope, Principal
from secumail.pipeline.auth_throttle import AuthThrottle
from secumail.pipeline.intake import Intake
from secumail.pki.passwords import dummy_hash, verify_secret
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage

log = logging.getLogger("secumail.submission")

AUTH_CACHE_TTL = 300.0
DOMAIN_CACHE_TTL = 5.0


class SubmissionPolicyImpl:
    def __init__(
        self, store: MetadataStore, intake: Intake, *, hostname: str, throttle: AuthThrottle
    ) -> None:
        self.store = store
        self.intake = intake
        self.hostname = hostname
        self.throttle = throttle
        self._key = secrets.token_bytes(32)
        self._auth_cache: dict[bytes, float] = {}
        self._domains: dict[str, tuple[float, frozenset[str]]] = {}

    async def authenticate(
        self, username: str, password: str, client_ip: str
    ) -> tuple[AuthOutcome, Principal | None]:
        if self.throttle.blocked(client_ip, username):
            log.warning("auth throttled for %s from %s", username[:64], client_ip)
            return AuthOutcome.THROTTLED, None
        cred = await self.store.credential_by_username(username)
        usable = cred is not None and cred.revoked_at is None and cred.kind == "smtp"
        token = hmac.new(self._key, f"{username}\x00{password}".encode(), hashlib.sha256).digest()
        cached = self._auth_cache.get(token)
        if usable and cached is not None and time.monotonic() - cached < AUTH_CACHE_TTL:
            ok = True
        else:
            stored = cred.secret_hash if cred is not None else dummy_hash()
            ok = await asyncio.to_thread(verify_secret, password, stored) and usable
        if not ok or cred is None:
            self.throttle.failed(client_ip, username)
            log.warning("auth failed for %s from %s", username[:64], client_ip)
            return AuthOutcome.FAILED, None
        self._auth_cache[token] = time.monotonic()
        return AuthOutcome.OK, Principal(cred.account_id, cred.id, username)

    async def _verified(self, account_id: str) -> frozenset[str]:
        hit = self._domains.get(account_id)
        if hit is not None and time.monotonic() - hit[0] < DOMAIN_CACHE_TTL:
            return hit[1]
        domains = await self.store.verified_domains(account_id)
        self._domains[account_id] = (time.monotonic(), domains)
        return domains

    async def check_sender(self, principal: Principal, address: Address | None) -> Reply | None:
        if address is None:
            return Reply(550, "5.7.1", "Null sender not allowed for submission")
        if address.domain not in await self._verified(principal.account_id):
            return Reply(
                550,
                "5.7.1",
                f"Sender domain {address.domain} is not a verified domain of your account",
            )
        return None

    async def check_recipient(self, principal: Principal, address: Address) -> Reply | None:
        return None

    async def admission(self) -> Reply | None:
        return R.INTAKE_FULL if await self.intake.full() else None

    async def accept(self, principal: Principal, envelope: Envelope, message: bytes) -> Reply:
        try:
            section = parse_header_section(message)
            author = single_from_address(section)
        except HeaderError as exc:
            return Reply(550, "5.7.1", f"Message refused: {exc}")
        if author.domain not in await self._verified(principal.account_id):
            return Reply(
                550,
                "5.7.1",
                f"From: domain {author.domain} is not a verified domain of your account",
            )
        account = await self.store.get_account(principal.account_id)
        message_id = new_message_id()
        trace = (
            f"Received: by {self.hostname} (Secumail) with ESMTPSA id {message_id};\r\n"
            f"\t{format_datetime(datetime.now(UTC))}\r\n"
        ).encode("ascii")
        assert envelope.mail_from is not None
        record = NewMessage(
            id=message_id,
            account_id=principal.account_id,
            mail_from=str(envelope.mail_from),
            recipients=[str(r) for r in envelope.rcpt_to],
            size=len(message),
            header_from=str(author),
            message_id_header=section.first("Message-ID"),
            subject=section.first("Subject") if account.store_subject else None,
            smtputf8=envelope.smtputf8,
            requiretls=envelope.requiretls,
            # RFC 8689 §4.1: with REQUIRETLS the TLS-Required field is ignored; without it,
            # "No" is honoured only for accounts allowed to relax TLS.
            tls_required_no=(
                not envelope.requiretls
                and account.allow_relaxed_tls
                and (section.first("TLS-Required") or "").strip().lower() == "no"
            ),
        )
        try:
            await self.intake.accept(record, trace + message)
        except AdmissionRefused:
            return R.INTAKE_FULL
        except SecumailError:
            log.exception("cannot queue message from account %s", principal.account_id)
            return Reply(451, "4.3.0", "Temporary local problem, try again later")
        log.info(
            "accepted %s from account %s: %d recipient(s), %d octets",
            message_id,
            principal.account_id,
            len(record.recipients),
            record.size,
        )
        return Reply(250, "2.0.0", f"Ok: queued as {message_id}")
