"""Recipient statuses: the closed set every interface reports."""

from __future__ import annotations

import enum


class RecipientStatus(enum.StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    REFUSED_INSECURE = "refused_insecure"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self not in (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)

    @property
    def is_failure(self) -> bool:
        """Final and not delivered: the sender gets a DSN."""
        return self.is_final and self is not RecipientStatus.DELIVERED


def suppresses(enhanced: str | None) -> bool:
    """Whether a permanent failure with this enhanced status code means the address is
    dead, so the account should not mail it again until someone lifts the suppression:
    the 5.1.x address statuses (RFC 3463 §3.2: no such mailbox, bad domain, ...). Other
    refusals (a full mailbox, a policy or spam verdict) say nothing lasting about the
    address."""
    return (enhanced or "").startswith("5.1.")
