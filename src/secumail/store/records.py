"""What the store keeps, as plain records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from secumail.mail.status import RecipientStatus


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    locale: str
    notify_address: str | None
    store_subject: bool
    created_at: float
    smime: bool = False  # S/MIME-sign this account's messages (RFC 8551)
    gateway_dkim: bool = False  # may sign with the gateway's domain when its own has no key
    # Honour "TLS-Required: No" (RFC 8689 §4.2.1) and relaxed TLS strategies: off by default;
    # every delivery below verified TLS is logged and marked in the metadata.
    allow_relaxed_tls: bool = False
    # GDPR: days the metadata of finished messages is kept (None: the gateway's default).
    retention_days: int | None = None
    # A virus or spam scanner that is down lets this account's messages through unscanned
    # (marked `scan_skipped`) instead of making them wait: off by default.
    scan_fail_open: bool = False


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    account_id: str
    token: str
    verified_at: float | None
    created_at: float

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    account_id: str
    kind: str
    username: str
    secret_hash: str
    created_at: float
    revoked_at: float | None
    scopes: tuple[str, ...] = ()  # API credentials: what their tokens may do


@dataclass(slots=True)
class NewMessage:
    """What the intake records for an accepted message (metadata only, never content)."""

    id: str
    account_id: str | None
    mail_from: str
    recipients: list[str]
    size: int
    header_from: str | None = None
    message_id_header: str | None = None
    subject: str | None = None
    smtputf8: bool = False
    dsn_of: str | None = None
    requiretls: bool = False  # RFC 8689 REQUIRETLS was given at submission
    tls_required_no: bool = False  # "TLS-Required: No" honoured (account allows relaxing)
    # The API caller's own key/values, echoed in webhooks.
    api_metadata: dict[str, Any] | None = None
    # What the scanners said at acceptance (`scan.inline`): stored as the `scanned` event.
    scanned: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class RecipientState:
    address: str
    domain: str
    status: RecipientStatus
    attempts: int
    reply: str | None
    enhanced: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    recipient: str | None
    kind: str
    detail: dict[str, Any]


class AttemptOutcome(enum.StrEnum):
    """What happened at one MX address, as the attempts table, the API (`attempts[].outcome`),
    `secumail message show` and the `secumail_deliveries_total` metric spell it.

    The closed set: nothing else is ever stored. What an outcome means for the domain's
    fate is `mail.secure_route.MxOutcome` (the deliver stage relates the two:
    `pipeline.domain_delivery`)."""

    TRANSACTION = "transaction"  # a secure session and an SMTP transaction: `reply` has the replies
    REFUSED = "refused"  # the server answered 4xx/5xx before the transaction (greeting, EHLO…)
    INSECURE = "insecure"  # reached, but it offered no secure route (certificate, TLSA, REQUIRETLS)
    UNREACHABLE = "unreachable"  # no connection, or it broke
    REJECTED = "rejected"  # not tried: the route plan ruled the MX out (`reply` says why)


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One attempt as the deliver stage records it: one MX address tried, or one MX the
    route plan ruled out (then only `domain`, `mx`, `outcome` and `reply`). Stored with the
    time of its transaction; read back as an `Attempt`."""

    domain: str
    mx: str
    outcome: AttemptOutcome
    reply: str
    ip: str | None = None
    route_method: str | None = None
    policy: str | None = None  # what authenticated the route: TLSA record, MTA-STS policy id
    tls_version: str | None = None
    cipher: str | None = None
    cert_subject: str | None = None
    cert_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A stored attempt (a `DeliveryAttempt` read back), `at` the time it was written."""

    at: float
    domain: str
    mx: str | None
    ip: str | None
    route_method: str | None
    tls_version: str | None
    cipher: str | None
    cert_subject: str | None
    cert_fingerprint: str | None
    outcome: AttemptOutcome
    reply: str | None
    policy: str | None = None  # what authenticated the route: TLSA record, MTA-STS policy id


@dataclass(slots=True)
class MessageRecord:
    id: str
    account_id: str | None
    mail_from: str
    header_from: str | None
    size: int
    message_id_header: str | None
    subject: str | None
    smtputf8: bool
    dsn_of: str | None
    created_at: float
    finished_at: float | None
    warned_at: float | None
    requiretls: bool = False
    tls_required_no: bool = False
    api_metadata: dict[str, Any] | None = None
    recipients: list[RecipientState] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    """A new status for one recipient, with the event that explains it."""

    address: str
    status: RecipientStatus
    reply: str | None = None
    enhanced: str | None = None
    count_attempt: bool = True
    event: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DkimKeyRow:
    domain: str
    selector: str
    algorithm: str
    sealed_key: bytes
    public_record: str
    created_at: float
    published_at: float | None
    retired_at: float | None

    @property
    def usable(self) -> bool:
        return self.published_at is not None and self.retired_at is None


@dataclass(frozen=True, slots=True)
class SmimeCertRow:
    address: str
    cert_pem: str
    chain_pem: str
    sealed_key: bytes
    not_after: float
    issued_at: float


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    message_id: str
    recipient: str
    token: str
    kid: str
    created_at: float
