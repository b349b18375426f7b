"""What the store keeps, as plain records."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    api_metadata: dict | None = None  # the API caller's own key/values, echoed in webhooks


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
    detail: dict


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    domain: str
    mx: str | None
    ip: str | None
    route_method: str | None
    tls_version: str | None
    cipher: str | None
    cert_subject: str | None
    cert_fingerprint: str | None
    outcome: str
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
    api_metadata: dict | None = None
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
    event: dict = field(default_factory=dict)


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
