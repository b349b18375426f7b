"""The inbound MX's bounce reader: late bounces to the bounce addresses of messages sent.

The bounce half of the inbound MX's session policy (`pipeline.inbound_mx.InboundMx`):
- RCPT: only `bounce+<message id><tag>@<server.hostname>` whose shape parses
  (`mail.verp.parse_bounce_local`); everything else 550 5.1.1. Never a relay: another
  domain, an address literal, `x%y@host`, a quoted local part, a bare `<postmaster>` are
  none of ours. (RFC 5321 §4.5.1 asks every SMTP receiver to take `postmaster`; this one
  keeps no mailbox and reads nothing but bounces, so it refuses it, like every other
  name: the operator's postmaster lives at the organisation's own domain.)
- DATA: the bounce is read in memory (`mail.bounces.parse_bounce`: RFC 3464 DSNs and
  the common other formats) and, for each bounce address, the
  recipient it names is found by its tag (`mail.verp.recipient_for`). A report of failure
  sets the recipient `bounced` (an event next to any earlier delivery and its evidence,
  which stay), adds a suppression when the address is dead (5.1.x, `mail.status.suppresses`), and queues a notice to the
  sender (stage `notify`, kind "bounced"); a report of delay is an event only. The
  webhooks see the recipient's `bounced` event like any other.
- A bounce that changes nothing (a forged or altered address, a message purged or never
  sent, no report in the body, no entry for the recipient) is answered 250 all the same
  (no oracle for valid addresses), logged (`bounce dropped`, with the reason) and counted
  (counter `bounces_dropped:<reason>`, in `secumail queue`).
Nothing of the bounce is kept but the status, the diagnostic line (bounded) and the
reporting and remote MTA names.
Settings: server.hostname, inbound.*.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from secumail.errors import NotFound
from secumail.mail import reply as R
from secumail.mail.address import Address
from secumail.mail.bounces import Bounce, BouncedRecipient, parse_bounce
from secumail.mail.reply import Reply
from secumail.mail.status import RecipientStatus, suppresses
from secumail.mail.verp import parse_bounce_local, recipient_for
from secumail.net.smtp_server import NO_SUCH_RECIPIENT, Envelope, Principal
from secumail.pipeline.bus import Bus, Job
from secumail.pipeline.payloads import notice
from secumail.store.counters import Counters
from secumail.store.database import Op
from secumail.store.metadata import MetadataStore
from secumail.store.records import MessageRecord, RecipientUpdate
from secumail.store.suppressions import SuppressionStore

log = logging.getLogger("secumail.inbound")

ACCEPTED = Reply(250, "2.0.0", "Ok: bounce received")
DROPPED = "bounces_dropped:"  # counter prefix
MAX_DIAGNOSTIC = 300


class BounceIntake:
    def __init__(
        self,
        store: MetadataStore,
        suppressions: SuppressionStore,
        counters: Counters,
        bus: Bus,
        *,
        verp_key: bytes,
        hostname: str,
        parse: Callable[[bytes], Bounce | None] = parse_bounce,
    ) -> None:
        self.store = store
        self.suppressions = suppressions
        self.counters = counters
        self.bus = bus
        self.verp_key = verp_key
        self.hostname = hostname.lower().rstrip(".")
        self.parse = parse

    # -- the questions the inbound MX (`pipeline.inbound_mx`) passes on -------------
    async def check_recipient(self, principal: Principal | None, address: Address) -> Reply | None:
        if address.domain != self.hostname or parse_bounce_local(address.local) is None:
            return NO_SUCH_RECIPIENT
        return None

    async def admission(self) -> Reply | None:
        # A flood of bounces makes notices: the same admission control as new messages.
        return R.INTAKE_FULL if await self.bus.over_bound("notify") else None

    async def accept(
        self, principal: Principal | None, envelope: Envelope, message: bytes
    ) -> Reply:
        try:
            # CPU-bound (up to a few tenths of a second for a crafted message): off the loop.
            bounce = await asyncio.to_thread(self.parse, message)
        except Exception:  # a parser bug on hostile input: logged, counted, never a crash
            log.exception("bounce parser failed")
            bounce = None
        for rcpt in envelope.rcpt_to:
            await self._apply(rcpt.local, bounce, envelope.client_ip)
        return ACCEPTED

    # -- applying one bounce address -------------------------------------------------
    async def _apply(self, local: str, bounce: Bounce | None, client_ip: str) -> None:
        parsed = parse_bounce_local(local)
        assert parsed is not None  # check_recipient let only these through
        message_id, tag = parsed
        try:
            record = await self.store.message(message_id, history=False, event_kinds=("bounced",))
        except NotFound:
            return await self._drop("unknown_message", message_id, client_ip)
        recipient = recipient_for(
            self.verp_key, message_id, tag, [r.address for r in record.recipients]
        )
        if recipient is None:
            return await self._drop("forged_address", message_id, client_ip)
        if bounce is None:
            return await self._drop("unreadable", message_id, client_ip)
        entry = _entry_for(bounce, recipient)
        if entry is None:
            return await self._drop("no_entry", message_id, client_ip)
        if entry.action == "delayed":
            await self.store.db.run(
                self.store.event_op(message_id, recipient, "bounce_delayed", _detail(bounce, entry))
            )
            log.info("message %s: a later delay report for a recipient", message_id)
            return None
        if entry.action != "failed":
            return await self._drop("not_a_failure", message_id, client_ip)
        if any(
            e.kind == "bounced" and e.recipient == recipient and e.detail.get("late")
            for e in record.events
        ):
            return await self._drop("repeated", message_id, client_ip)
        await self._bounced(record, recipient, bounce, entry)
        return None

    async def _bounced(
        self, record: MessageRecord, recipient: str, bounce: Bounce, entry: BouncedRecipient
    ) -> None:
        reply = (
            entry.diagnostic
            or f"{entry.status} reported by {bounce.reporting_mta or 'the recipient side'}"
        )[:MAX_DIAGNOSTIC]
        update = RecipientUpdate(
            recipient,
            RecipientStatus.BOUNCED,
            reply,
            entry.status,
            count_attempt=False,
            event=_detail(bounce, entry) | {"late": True, "reply": reply},
        )
        also: list[Op] = []
        if entry.permanent and suppresses(entry.status) and record.account_id and record.mail_from:
            also.append(
                self.suppressions.add_op(record.account_id, recipient, reply, "bounce", record.id)
            )
        outcome = self.store.outcome_op(record.id, [update], also=also)
        if record.mail_from:
            # The notice and the new status are durable together (stage notify, RFC 3464).
            job = Job(record.id, notice("bounced", recipient))
            await self.bus.publish("notify", job, writes=[outcome])
        else:
            await self.store.db.run(outcome)
        log.info(
            "message %s: bounced later (%s)%s",
            record.id,
            entry.status,
            ", suppressed" if also else "",
        )

    async def _drop(self, reason: str, message_id: str, client_ip: str) -> None:
        log.warning(
            "bounce dropped",
            extra={"fields": {"reason": reason, "message": message_id, "client": client_ip}},
        )
        await self.counters.bump(DROPPED + reason)


def _entry_for(bounce: Bounce, recipient: str) -> BouncedRecipient | None:
    """The report's entry for `recipient`: by its address, else the only one there is."""
    wanted = recipient.lower()
    for entry in bounce.recipients:
        if entry.address is not None and entry.address.lower() == wanted:
            return entry
    if len(bounce.recipients) == 1:
        return bounce.recipients[0]
    return None


def _detail(bounce: Bounce, entry: BouncedRecipient) -> dict[str, Any]:
    return {
        "status": entry.status,
        "reporting_mta": (bounce.reporting_mta or "")[:255] or None,
        "mx": (entry.remote_mta or "")[:255] or None,  # as a delivery event names it
        "format": bounce.format,
    }
