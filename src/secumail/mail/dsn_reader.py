"""Reading a delivery status notification (RFC 3464), sans-I/O: the minimal reader the
inbound MX uses until `mail.bounces` (every common bounce format) is there.

Same shape as `mail.bounces`: `parse_dsn(raw) -> Bounce | None`. Only a
multipart/report (RFC 6522) with a message/delivery-status part is read; anything else is
None. Every value is hostile: fields are decoded, stripped of control characters and cut
to `MAX_FIELD` characters; at most `MAX_RECIPIENTS` recipient blocks are read.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

MAX_FIELD = 300
MAX_RECIPIENTS = 100
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    address: str | None  # Final-Recipient (RFC 3464 §2.3.2), else Original-Recipient
    action: str  # failed, delayed, delivered, relayed, expanded (§2.3.3)
    status: str  # the enhanced status code (§2.3.4, RFC 3463)
    diagnostic: str | None  # Diagnostic-Code's text (§2.3.6), e.g. "550 5.1.1 no such user"
    remote_mta: str | None  # Remote-MTA (§2.3.5)

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and self.status.startswith("5.")


@dataclass(frozen=True, slots=True)
class Bounce:
    format: str
    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str | None


def parse_dsn(raw: bytes) -> Bounce | None:
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    status_part = _delivery_status(message)
    if status_part is None:
        return None
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1 : 1 + MAX_RECIPIENTS]
    recipients = []
    for block in per_recipient:
        if not isinstance(block, Message):
            continue
        action = (_field(block, "Action") or "").lower()
        status = (_field(block, "Status") or "").split(" ")[0]
        if not action or not _STATUS.match(status):
            continue  # §2.3.3, §2.3.4: both are required
        recipients.append(
            BouncedRecipient(
                address=_typed(block, "Final-Recipient") or _typed(block, "Original-Recipient"),
                action=action,
                status=status,
                diagnostic=_typed(block, "Diagnostic-Code"),
                remote_mta=_typed(block, "Remote-MTA"),
            )
        )
    if not recipients:
        return None
    reporting = _typed(per_message, "Reporting-MTA") if isinstance(per_message, Message) else None
    return Bounce("rfc3464", tuple(recipients), reporting)


def _delivery_status(message: Message) -> Message | None:
    # RFC 6522 §3: the report is multipart/report; its second part (RFC 3464 §2) is
    # message/delivery-status. Looked for among the top level's parts only.
    if message.get_content_type() != "multipart/report":
        return None
    parts = message.get_payload()
    if not isinstance(parts, list):
        return None
    for part in parts[:5]:
        if isinstance(part, Message) and part.get_content_type() == "message/delivery-status":
            return part
    return None


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    text = _CONTROL.sub(" ", str(value)).strip()
    return text[:MAX_FIELD] or None


def _typed(block: Message, name: str) -> str | None:
    """The value of an RFC 3464 typed field (`rfc822; a@b`, `dns; mx.example`, `smtp; 550 …`)."""
    value = _field(block, name)
    if value is None:
        return None
    _type, sep, rest = value.partition(";")
    return (rest if sep else value).strip() or None
