"""The submission policy: who may relay, from which addresses, and accepting a message.

Implements `net.smtp_server.SubmissionPolicy` on top of the store and the intake:
- AUTH: username + password checked against the slow hash, failures throttled per
  client address and per username; a successful check is remembered briefly (keyed by
  an HMAC of the password) so clients that reconnect per message do not pay scrypt
  every time, while revocation still applies at once.
- Watching (`pipeline/sender_watch.py`): failed and throttled logins of existing
  credentials are counted, and the TLS of every accepted message is compared with the
  credential's best — in memory; the alerts are written off the reply path.
- Closed network: the envelope sender and the single From: header must be in a
  verified domain of the authenticated account (550 5.7.1 otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets

from secumail.mail import reply as R
from secumail.mail.address import Address
from secumail.mail.reply import Reply
from secumail.net.smtp_server import AuthOutcome, Envelope, Principal
from secumail.pipeline.acceptance import MessageAcceptor, Refusal, Submission
from secumail.pipeline.auth_throttle import AuthThrottle
from secumail.pipeline.sender_watch import Sender, SenderWatch
from secumail.pki.passwords import dummy_hash, verify_secret
from secumail.store.audit import AuditLog
from secumail.store.audit_chain import AuditKind
from secumail.store.metadata import MetadataStore
from secumail.store.records import Account
from secumail.ttl_cache import TtlCache

log = logging.getLogger("secumail.submission")

AUTH_CACHE_TTL = 300.0
DOMAIN_CACHE_TTL = 5.0
ACCOUNT_CACHE_TTL = 1.0


class SubmissionPolicyImpl:
    authenticated_relay = True  # the session asks TLS and AUTH before MAIL

    def __init__(
        self,
        store: MetadataStore,
        acceptor: MessageAcceptor,
        *,
        throttle: AuthThrottle,
        audit: AuditLog | None = None,
        watch: SenderWatch | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.watch = watch
        self.acceptor = acceptor
        self.throttle = throttle
        self._key = secrets.token_bytes(32)
        # Logins that passed a moment ago, by a keyed digest of user and password: a client
        # that logs in per message costs one scrypt per AUTH_CACHE_TTL, not one a message.
        self._auth_cache: TtlCache[bool] = TtlCache(AUTH_CACHE_TTL)
        self._hashing = asyncio.Semaphore(2)
        # The account's settings, read once a second rather than once a message.
        self._accounts: TtlCache[Account] = TtlCache(ACCOUNT_CACHE_TTL)

    async def authenticate(
        self, username: str, password: str, client_ip: str
    ) -> tuple[AuthOutcome, Principal | None]:
        if self.throttle.blocked(client_ip, username):
            log.warning("auth throttled for %s from %s", username[:64], client_ip)
            if self.watch is not None:
                await self.watch.login_throttled(username, self.store.credential_by_username)
            return AuthOutcome.THROTTLED, None
        cred = await self.store.credential_by_username(username)
        usable = cred is not None and cred.revoked_at is None and cred.kind == "smtp"
        token = hmac.new(self._key, f"{username}\x00{password}".encode(), hashlib.sha256).digest()
        if usable and self._auth_cache.peek(token):
            ok = True
        else:
            stored = cred.secret_hash if cred is not None else dummy_hash()
            async with self._hashing:  # scrypt takes 32 MiB each: a burst of logins queues
                ok = await asyncio.to_thread(verify_secret, password, stored) and usable
        if not ok or cred is None:
            self.throttle.failed(client_ip, username)
            log.warning("auth failed for %s from %s", username[:64], client_ip)
            if self.watch is not None:
                self.watch.login_failed(username, Sender.of(cred))
            reason = (
                "unknown user"
                if cred is None
                else ("wrong password" if usable else "credential revoked or not for SMTP")
            )
            await self._audit_refusal(
                username, client_ip, reason, self.throttle.blocked(client_ip, username)
            )
            return AuthOutcome.FAILED, None
        self._auth_cache.put(token, True)
        return AuthOutcome.OK, Principal(cred.account_id, cred.id, username)

    async def _audit_refusal(
        self, username: str, client_ip: str, reason: str, now_throttled: bool
    ) -> None:
        """A refused login in the audit log, saying whether it makes the throttle close
        (attempts it then turns away are only logged: it bounds how many of these a
        client can cause)."""
        if self.audit is None:
            return
        await self.audit.record(
            f"smtp:{client_ip}",
            AuditKind.LOGIN_REFUSED,
            username[:64],
            {"channel": "smtp", "reason": reason, "now_throttled": now_throttled},
        )

    async def check_sender(
        self, principal: Principal | None, address: Address | None
    ) -> Reply | None:
        assert principal is not None  # authenticated_relay: the session saw AUTH
        try:
            await self.acceptor.check_sender(principal.account_id, address)
        except Refusal as r:
            return Reply(r.code, r.enhanced, r.text)
        return None

    async def check_recipient(self, principal: Principal | None, address: Address) -> Reply | None:
        assert principal is not None
        try:
            await self.acceptor.check_recipient(principal.account_id, address)
        except Refusal as r:
            return Reply(r.code, r.enhanced, r.text)
        return None

    async def admission(self) -> Reply | None:
        return R.INTAKE_FULL if await self.acceptor.full() else None

    async def accept(
        self, principal: Principal | None, envelope: Envelope, message: bytes
    ) -> Reply:
        assert principal is not None and envelope.mail_from is not None
        account = await self._accounts.get(
            principal.account_id, lambda: self.store.get_account(principal.account_id)
        )
        submission = Submission(
            account,
            envelope.mail_from,
            list(envelope.rcpt_to),
            message,
            "ESMTPSA",
            smtputf8=envelope.smtputf8,
            requiretls=envelope.requiretls,
            envelope_checked=True,
        )
        try:
            message_id = await self.acceptor.accept(submission)
        except Refusal as r:
            return Reply(r.code, r.enhanced, r.text)
        if self.watch is not None:
            await self.watch.submitted(
                Sender(principal.credential_id, principal.account_id, principal.username),
                "smtp",
                envelope.tls_version,
                envelope.tls_cipher,
                envelope.client_cert,
            )
        return Reply(250, "2.0.0", f"Ok: queued as {message_id}")
