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
