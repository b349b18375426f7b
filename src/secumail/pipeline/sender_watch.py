"""Watching senders: the TLS each credential submits over, and bursts of failed logins.

Per credential, on every accepted submission (SMTP: `pipeline/submission.py`; API:
`api/routes_messages.py`) the TLS version and cipher are compared with the strongest the
credential used before (`mail/tls_strength.py`). Below it: alert `sender_tls_warning`
(raised); back at it: resolved. Failed logins of a known credential (SMTP AUTH and the
API's token endpoint; attempts the throttle turned away too) are counted; `auth_alert_failures`
within `auth_alert_window` seconds: alert `auth_failures`; resolved when no login of that
credential has failed for a whole window (a successful login does not resolve it: the
owner logging in says nothing about the guesser). With `submission.client_ca_file` set,
the client certificate a credential's client presents is watched too: expiring within 30
days raises `sender_tls_warning` (about `<credential id>/client-certificate`, reason
`client_certificate_expires`; also found by the sweep as the date comes nearer), a later
certificate that does not resolves it. Telling is `AccountAlerts`' job, once
per change; this module only decides.

Cost on the message path: a dict lookup and an integer comparison; on the first
submission of a credential in a process's life two point reads (its record and whether
an alert is open). The record is written only when it changed — at once (one small write
in the next group commit, usually the same batch as the message) when the version or
cipher changed, otherwise (only the time of last use) by the sweep. Alerts are written
by a background task off the reply path; a failed write is logged and the decision made
again at the next submission and at every sweep, so it is late, never lost.

Failed logins are counted in memory only, per process (as `AuthThrottle`): at most
`auth_alert_failures` times per credential, and only for credentials that exist —
guessed usernames cost nothing. With `server.workers` > 1 each process counts its own
failures, so a burst spread over processes needs more attempts to be seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from secumail.mail import sender_alert_texts as texts
from secumail.mail.tls_strength import TlsUse
from secumail.net.tls import ClientCertificate
from secumail.pipeline.account_alerts import AccountAlerts, AlertKind, AlertTexts
from secumail.store.credential_tls import CredentialTls, CredentialTlsStore
from secumail.store.records import Credential

log = logging.getLogger("secumail.senders")

# The sweep (recoveries, records to write) runs at least this often.
SWEEP_INTERVAL = 30.0
# A client certificate that expires within this is warned about.
CERT_WARNING = 30 * 86400.0
# `about` of a credential's client-certificate alert (its TLS alert is the credential id).
CERT_ABOUT = "{}/client-certificate"


@dataclass(frozen=True, slots=True)
class Sender:
    """A credential that is submitting or being tried: no secret in here."""

    credential_id: str
    account_id: str
    username: str

    @classmethod
    def of(cls, cred: Credential | None) -> Sender | None:
        """The credential as a sender to watch; None when unknown or revoked."""
        if cred is None or cred.revoked_at is not None:
            return None
        return cls(cred.id, cred.account_id, cred.username)


class SenderWatch:
    def __init__(
        self,
        alerts: AccountAlerts,
        records: CredentialTlsStore,
        *,
        auth_failures: int,
        auth_window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alerts = alerts
        self.records = records
        self.auth_failures = auth_failures
        self.auth_window = auth_window
        self.clock = clock
        self._tls: dict[str, CredentialTls] = {}  # loaded (or new) records, by credential
        # The client certificate each credential's client presented last (this process).
        self._certs: dict[str, tuple[ClientCertificate, str]] = {}
        self._dirty: set[str] = set()
        self._flush_soon: asyncio.Task[None] | None = None
        self._urgent = False  # a version or cipher changed: write without waiting for the sweep
        self._senders: dict[str, Sender] = {}  # credentials seen, by id and by username
        self._by_username: dict[str, Sender] = {}
        self._failures: dict[str, deque[float]] = {}
        # What this process believes is open (the store decides: AccountAlerts tells a
        # change only once, whoever asks).
        self._open: set[tuple[AlertKind, str]] = set()
        self._telling: set[tuple[AlertKind, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sweep_interval(self) -> float:
        return min(SWEEP_INTERVAL, max(0.5, self.auth_window / 4))

    # -- submissions -----------------------------------------------------------------
    async def submitted(
        self,
        sender: Sender,
        channel: str,
        version: str | None,
        cipher: str | None,
        client_cert: ClientCertificate | None = None,
    ) -> None:
        """An accepted submission over `channel` ("smtp" | "api"); never raises."""
        if not version or not cipher:
            return  # no TLS (the API's plain_http on loopback): nothing to compare
        try:
            await self._submitted(sender, channel, TlsUse(version, cipher))
            if client_cert is not None:
                await self._client_cert(sender, channel, client_cert)
        except Exception:
            log.exception("recording the TLS of credential %s failed", sender.credential_id)

    async def _submitted(self, sender: Sender, channel: str, use: TlsUse) -> None:
        cid = sender.credential_id
        self._remember(sender)
        now = self.clock()
        record = self._tls.get(cid)
        stored = True
        if record is None:
            record, stored = await self._load(sender, channel, use, now)
        changed = not stored or (record.last_version, record.last_cipher, record.last_channel) != (
            use.version,
            use.cipher,
            channel,
        )
        record.last_version, record.last_cipher, record.last_rank = (
            use.version,
            use.cipher,
            use.rank,
        )
        record.last_channel, record.last_seen = channel, now
        if use.rank > record.best_rank:
            record.best_version, record.best_cipher, record.best_rank = (
                use.version,
                use.cipher,
                use.rank,
            )
        self._dirty.add(cid)
        if changed:
            self._urgent = True
            if self._flush_soon is None:
                self._flush_soon = self._spawn(self._flush_now())
        self._reconcile_tls(sender, record)

    async def _load(
        self, sender: Sender, channel: str, use: TlsUse, now: float
    ) -> tuple[CredentialTls, bool]:
        """The record of a credential first seen in this process, and whether the store
        has it (else it is new, made from this use)."""
        cid = sender.credential_id
        record = await self.records.get(cid)
        stored = record is not None
        if record is None:
            record = CredentialTls(
                cid, sender.account_id, use.version, use.cipher, use.rank,
                use.version, use.cipher, use.rank, channel, now, now,
            )  # fmt: skip
        if await self.alerts.alerts.is_open(sender.account_id, AlertKind.SENDER_TLS, cid):
            self._open.add((AlertKind.SENDER_TLS, cid))
        if cid in self._tls:  # loaded meanwhile by another submission
            return self._tls[cid], True
        self._tls[cid] = record
        return record, stored

    def _reconcile_tls(self, sender: Sender, record: CredentialTls) -> None:
        """Tell a change between what the record says and what the account was told."""
        key = (AlertKind.SENDER_TLS, sender.credential_id)
        if key in self._telling:
            return
        before = TlsUse(record.best_version, record.best_cipher)
        now = TlsUse(record.last_version, record.last_cipher)
        detail: dict[str, Any] = {
            "credential_id": sender.credential_id,
            "username": sender.username,
            "channel": record.last_channel,
            "now": {"version": now.version, "cipher": now.cipher},
        }
        if record.last_rank < record.best_rank and key not in self._open:
            detail |= {
                "reason": "tls_downgrade",
                "before": {"version": before.version, "cipher": before.cipher},
            }
            words = texts.tls_downgrade(sender.username, record.last_channel, before, now)
            self._tell(key, sender, True, detail, words)
        elif record.last_rank >= record.best_rank and key in self._open:
            words = texts.tls_recovered(sender.username, record.last_channel, now)
            self._tell(key, sender, False, detail, words)

    # -- client certificates ---------------------------------------------------------
    async def _client_cert(self, sender: Sender, channel: str, cert: ClientCertificate) -> None:
        """Remember the certificate a credential's client last presented, and warn when it
        expires within CERT_WARNING (resolved when a later one does not)."""
        cid = sender.credential_id
        about = CERT_ABOUT.format(cid)
        if cid not in self._certs and await self.alerts.alerts.is_open(
            sender.account_id, AlertKind.SENDER_TLS, about
        ):
            self._open.add((AlertKind.SENDER_TLS, about))
        self._certs[cid] = (cert, channel)
        self._reconcile_cert(sender)

    def _reconcile_cert(self, sender: Sender) -> None:
        cert, channel = self._certs[sender.credential_id]
        key = (AlertKind.SENDER_TLS, CERT_ABOUT.format(sender.credential_id))
        if key in self._telling:
            return
        left = cert.not_after - self.clock()
        expiring = left < CERT_WARNING
        detail: dict[str, Any] = {
            "credential_id": sender.credential_id,
            "username": sender.username,
            "channel": channel,
            "client_certificate": {
                "sha256": cert.sha256,
                "not_after": datetime.fromtimestamp(cert.not_after, UTC).isoformat(),
            },
        }
        if expiring and key not in self._open:
            detail["reason"] = "client_certificate_expires"
            days = max(0, int(left // 86400))
            words = texts.client_cert_expiring(sender.username, cert.not_after, days)
            self._tell(key, sender, True, detail, words)
        elif not expiring and key in self._open:
            self._tell(
                key,
                sender,
                False,
                detail,
                texts.client_cert_renewed(sender.username, cert.not_after),
            )

    # -- logins ----------------------------------------------------------------------
    async def login_throttled(
        self, username: str, find: Callable[[str], Awaitable[Credential | None]]
    ) -> None:
        """A login turned away by the throttle before its password was checked: counted
        for the credential of that name when there is one (known from an earlier failure,
        else one indexed read; never a write)."""
        sender = self._by_username.get(username)
        if sender is None:
            try:
                sender = Sender.of(await find(username))
            except Exception:
                log.exception("looking up a throttled username failed")
                return
        if sender is not None:
            self.login_failed(username, sender)

    def login_failed(self, username: str, sender: Sender | None) -> None:
        """A failed login for `username`; `sender` when the credential exists and is not
        revoked, else None (matched by username against credentials seen before; unknown
        usernames are not counted)."""
        if sender is not None:
            self._remember(sender)
        else:
            sender = self._by_username.get(username)
            if sender is None:
                return
        cid = sender.credential_id
        now = self.clock()
        q = self._failures.get(cid)
        if q is None:
            q = self._failures[cid] = deque(maxlen=self.auth_failures)
        q.append(now)
        key = (AlertKind.AUTH_FAILURES, cid)
        if (
            len(q) >= self.auth_failures
            and now - q[0] <= self.auth_window
            and key not in self._open
            and key not in self._telling
        ):
            detail = {
                "credential_id": cid,
                "username": sender.username,
                "failures": len(q),
                "window": self.auth_window,
            }
            words = texts.auth_burst(sender.username, len(q), self.auth_window)
            self._tell(key, sender, True, detail, words)

    # -- the sweep -------------------------------------------------------------------
    async def sweep(self) -> None:
        """Periodic: write changed records, resolve quiet login bursts, re-read which
        alerts are open (another process may have told a change), and tell what a
        failed write left untold."""
        await self.flush()
        now = self.clock()
        open_auth = await self.alerts.open(kind=AlertKind.AUTH_FAILURES)
        for alert in open_auth:
            q = self._failures.get(alert.about)
            last = q[-1] if q else 0.0
            if now - max(last, alert.raised_at) < self.auth_window:
                continue
            key = (AlertKind.AUTH_FAILURES, alert.about)
            if key in self._telling:
                continue
            username = str(alert.detail.get("username", ""))
            sender = self._senders.get(alert.about) or Sender(
                alert.about, alert.account_id, username
            )
            detail = {
                "credential_id": alert.about,
                "username": sender.username,
                "quiet_for": self.auth_window,
            }
            self._open.add(key)
            self._tell(
                key, sender, False, detail, texts.auth_quiet(sender.username, self.auth_window)
            )
        open_tls = {a.about for a in await self.alerts.open(kind=AlertKind.SENDER_TLS)}
        for cid, record in self._tls.items():
            key = (AlertKind.SENDER_TLS, cid)
            if key in self._telling:
                continue
            if cid in open_tls:
                self._open.add(key)
            else:
                self._open.discard(key)
            seen = self._senders.get(cid)
            if seen is not None:
                self._reconcile_tls(seen, record)
        for cid in self._certs:
            about = CERT_ABOUT.format(cid)
            key = (AlertKind.SENDER_TLS, about)
            if key in self._telling:
                continue
            if about in open_tls:
                self._open.add(key)
            else:
                self._open.discard(key)
            seen = self._senders.get(cid)
            if seen is not None:
                self._reconcile_cert(seen)  # a certificate comes nearer its end by itself
        self._forget_old_failures(now)

    def _forget_old_failures(self, now: float) -> None:
        for cid, q in list(self._failures.items()):
            if (
                q
                and now - q[-1] > self.auth_window
                and (AlertKind.AUTH_FAILURES, cid) not in (self._open | self._telling)
            ):
                del self._failures[cid]

    async def run(self) -> None:
        """The sweep, every `sweep_interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("the sender watch sweep failed; trying again at the next interval")

    async def flush(self) -> None:
        """Write the records that changed since the last write (one transaction)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        records = [self._tls[cid] for cid in dirty if cid in self._tls]
        try:
            await self.records.db.run(CredentialTlsStore.save_op(records))
        except BaseException:
            self._dirty |= dirty  # written at the next flush
            raise

    async def settled(self) -> None:
        """Wait until the alerts and writes under way are done."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Let the alerts being told finish, then write what is left."""
        await self.settled()
        await self.flush()

    # -- plumbing --------------------------------------------------------------------
    def _remember(self, sender: Sender) -> None:
        if sender.credential_id not in self._senders:
            self._senders[sender.credential_id] = sender
            self._by_username[sender.username] = sender

    async def _flush_now(self) -> None:
        """Write changed records now, and again while changes come in during a write."""
        try:
            while self._urgent:
                self._urgent = False
                await self.flush()
        finally:
            self._flush_soon = None

    def _tell(
        self,
        key: tuple[AlertKind, str],
        sender: Sender,
        raise_it: bool,
        detail: dict[str, Any],
        words: AlertTexts,
    ) -> None:
        self._telling.add(key)
        kind, about = key

        async def tell() -> None:
            try:
                if raise_it:
                    await self.alerts.raise_alert(sender.account_id, kind, about, detail, words)
                    self._open.add(key)
                else:
                    await self.alerts.resolve(sender.account_id, kind, about, detail, words)
                    self._open.discard(key)
            except Exception:
                # Not told now: the next submission or sweep decides again.
                log.exception("telling account %s about %s failed", sender.account_id, kind)
            finally:
                self._telling.discard(key)

        self._spawn(tell())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sender watch task failed: %r", task.exception())
