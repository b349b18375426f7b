"""Telling an account that something it relies on broke — once, and once more when fixed.

The watchers (a sender's TLS fell, a burst of failed logins, a domain's DNS record broke)
call `raise_alert` whenever they see the problem and `resolve` whenever they see it gone;
only a change of state tells anyone. Telling is three things written in one transaction:
the open alert (`store.account_alerts`), an account event (`store.account_events`, which
the webhook dispatcher sends as `<kind>` with `"state": "raised"` or `"resolved"`), and,
when the account has a notify address, a mail to it in the account's language, queued
through the intake like a delivery notice (null sender; the secure-delivery rules apply).
When two processes see the same change at once, one transaction wins and the other is
`AlertUnchanged`: nobody is told twice.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from secumail.errors import NotFound
from secumail.mail.alert_mail import AlertText, build_alert_mail
from secumail.mail.ids import new_message_id
from secumail.mail.notice_texts import locale_or_default
from secumail.pipeline.intake import Intake
from secumail.store.account_alerts import AccountAlertStore, AlertUnchanged, OpenAlert
from secumail.store.account_events import AccountEventLog
from secumail.store.database import Database, Op
from secumail.store.metadata import MetadataStore
from secumail.store.records import NewMessage

log = logging.getLogger("secumail.alerts")


class AlertKind(enum.StrEnum):
    """The alerts there are; each is also the webhook event type that carries it."""

    SENDER_TLS = "sender_tls_warning"
    AUTH_FAILURES = "auth_failures"
    DOMAIN_DNS = "domain_dns_error"


class AlertState(enum.StrEnum):
    RAISED = "raised"
    RESOLVED = "resolved"


# locale -> what the mail says; "en" must be there (the fallback).
AlertTexts = Mapping[str, AlertText]


class AccountAlerts:
    def __init__(
        self,
        db: Database,
        store: MetadataStore,
        intake: Intake,
        *,
        hostname: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.store = store
        self.intake = intake
        self.hostname = hostname
        self.clock = clock
        self.alerts = AccountAlertStore(db)

    async def raise_alert(
        self,
        account_id: str,
        kind: AlertKind,
        about: str,
        detail: Mapping[str, Any],
        texts: AlertTexts,
    ) -> bool:
        """Open the alert and tell the account; False (nobody told) when it is open already."""
        if await self.alerts.is_open(account_id, kind, about):
            return False
        now = self.clock()
        write = self.alerts.raise_op(account_id, kind, about, dict(detail), now)
        return await self._tell(account_id, kind, about, AlertState.RAISED, detail, texts, write)

    async def resolve(
        self,
        account_id: str,
        kind: AlertKind,
        about: str,
        detail: Mapping[str, Any],
        texts: AlertTexts,
    ) -> bool:
        """Close the alert and tell the account; False when no such alert is open."""
        if not await self.alerts.is_open(account_id, kind, about):
            return False
        write = self.alerts.resolve_op(account_id, kind, about)
        return await self._tell(account_id, kind, about, AlertState.RESOLVED, detail, texts, write)

    async def open(self, account_id: str | None = None, kind: str | None = None) -> list[OpenAlert]:
        return await self.alerts.open(account_id, kind)

    async def _tell(
        self,
        account_id: str,
        kind: AlertKind,
        about: str,
        state: AlertState,
        detail: Mapping[str, Any],
        texts: AlertTexts,
        write: Op,
    ) -> bool:
        event = AccountEventLog.record_op(
            account_id, str(kind), {**detail, "state": str(state), "about": about}
        )
        try:
            account = await self.store.get_account(account_id)
        except NotFound:
            return False  # the account is gone: nobody to tell
        try:
            if account.notify_address:
                text = texts.get(locale_or_default(account.locale)) or texts["en"]
                mail = build_alert_mail(
                    hostname=self.hostname, to=account.notify_address, text=text, now=self.clock()
                )
                await self.intake.accept(
                    NewMessage(
                        id=new_message_id(),
                        account_id=account_id,
                        mail_from="",
                        recipients=[account.notify_address],
                        size=len(mail),
                        header_from=f"mailer-daemon@{self.hostname}",
                        smtputf8=not mail.isascii(),
                    ),
                    mail,
                    admission=False,
                    also=[write, event],
                )
            else:
                await self.db.run(_all(write, event))
        except AlertUnchanged:
            return False  # another process told them a moment ago
        log.info(
            "account alert",
            extra={"fields": {"account": account_id, "kind": str(kind), "state": str(state)}},
        )
        return True


def _all(*ops: Op) -> Op:
    def op(c: Any) -> None:
        for o in ops:
            o(c)

    return op
