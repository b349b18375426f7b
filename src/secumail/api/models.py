"""Request and response bodies of the API (they make the OpenAPI 3.1 schema)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6749 token type, not a secret
    expires_in: int
    scope: str


class Attachment(_Model):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    content: str = Field(description="base64")


class MessageIn(_Model):
    from_: str = Field(alias="from", min_length=3, max_length=998)
    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    reply_to: str | None = Field(default=None, max_length=998)
    subject: str = Field(default="", max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)
    require_tls: bool = Field(default=False, description="REQUIRETLS (RFC 8689) for this message")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RecipientOut(BaseModel):
    address: str
    status: str
    reply: str | None = None
    enhanced: str | None = None
    attempts: int = Field(
        0,
        description="How often delivery to this recipient was tried: each try is in the "
        "message's `attempts` list (one entry per mail server of its domain used or passed "
        "over). 0 when it was decided without trying a server (a domain that does not "
        "exist, a refusal before delivery).",
    )


class AcceptedOut(BaseModel):
    id: str
    recipients: list[RecipientOut]


class AttemptOut(BaseModel):
    at: float
    domain: str
    mx: str | None
    ip: str | None
    route: str | None
    policy: str | None
    tls_version: str | None
    cipher: str | None
    cert_fingerprint: str | None
    outcome: str
    reply: str | None


class EventOut(BaseModel):
    at: float
    recipient: str | None
    kind: str
    detail: dict[str, Any]


class MessageOut(BaseModel):
    id: str
    from_: str = Field(serialization_alias="from")
    size: int
    message_id_header: str | None
    subject: str | None
    created_at: float
    finished_at: float | None
    metadata: dict[str, str] = Field(default_factory=dict)
    recipients: list[RecipientOut]
    attempts: list[AttemptOut] = Field(
        default_factory=list,
        description="Every mail server tried or passed over, per recipient domain, in order.",
    )
    events: list[EventOut] = Field(default_factory=list)


class MessageSummary(BaseModel):
    id: str
    from_: str = Field(serialization_alias="from")
    created_at: float
    finished_at: float | None
    recipients: list[RecipientOut]


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None


class EvidenceOut(BaseModel):
    message_id: str
    recipient: str
    token: str
    record: dict[str, Any]
    public_key: dict[str, Any]


class ChecksIn(_Model):
    addresses: list[str] = Field(min_length=1, max_length=50)


class CheckOut(BaseModel):
    address: str
    domain: str
    secure: bool
    method: str | None
    reasons: list[str]
    mx: list[dict[str, Any]]
    dnssec: dict[str, Any]
    mta_sts: dict[str, Any]


class ChecksOut(BaseModel):
    results: list[CheckOut]


class DnsRecord(BaseModel):
    name: str
    type: str
    value: str = Field(description="the value in one piece, as web forms take it")
    rdata: str = Field(description="the value as quoted strings of at most 255 octets")
    zone: str = Field(description="a zone-file line (RFC 1035 §5.1)")
    purpose: str
    required: bool


class DomainIn(_Model):
    name: str = Field(min_length=3, max_length=253)


class DomainOut(BaseModel):
    name: str
    verified: bool
    verified_at: float | None
    dkim_published: bool
    records: list[DnsRecord]


class DomainCheckOut(BaseModel):
    name: str
    verified: bool
    dkim_published: bool
    checks: list[dict[str, Any]]


class HealthCheckOut(BaseModel):
    id: str = Field(
        description="the check, named after internet.nl's (auth_spf_policy, starttls_dane_valid, …)"
    )
    part: Literal["sending", "inbound"] = Field(
        description="sending: records Secumail's mail relies on; inbound: the domain's own MX servers"
    )
    status: Literal["ok", "warn", "fail", "info"]
    alerting: bool = Field(description="this failure is part of the domain_dns_error alert")
    title: str
    record: str = Field(description="the DNS name or mail server looked at")
    found: str = Field(description="what was there (shortened)")
    problem: str = Field(description="why it is not ok, a stable code; empty when ok")
    expected: str = Field(description="what should be there, when Secumail knows it")
    advice: dict[str, str] = Field(description="what to do, per language (en, nl); empty when ok")


class DomainHealthOut(BaseModel):
    domain: str
    checked_at: float
    status: Literal["ok", "warn", "fail"]
    alert_open: bool = Field(description="a domain_dns_error alert about this domain is open")
    checks: list[HealthCheckOut]


class SuppressionIn(_Model):
    address: str = Field(min_length=3, max_length=254)
    reason: str = Field(default="added by API", max_length=500)


class SuppressionOut(BaseModel):
    address: str
    reason: str
    origin: str
    message_id: str | None
    created_at: float


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None


# The events a webhook may subscribe to: listed once, here; EVENT_TYPES is the same list
# as a tuple, for code that iterates.
EventType = Literal[
    "delivered",
    "deferred",
    "bounced",
    "refused_insecure",
    "rejected",
    "expired",
    "suppressed",
    "domain_dns_error",
    "sender_tls_warning",
    "auth_failures",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class WebhookIn(_Model):
    url: str = Field(min_length=9, max_length=2000, pattern=r"^https://")
    events: list[EventType] = Field(min_length=1)
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: float
    secret: str | None = Field(default=None, description="shown only when created")


class AlertOut(BaseModel):
    """An alert the account was told about (webhook `state: raised`) that is not over yet."""

    kind: str = Field(description="sender_tls_warning, auth_failures or domain_dns_error")
    about: str = Field(description="what it is about: a credential id, a domain")
    raised_at: float
    detail: dict[str, Any] = Field(description="the data of the raised webhook event")


class WebhookDeliveryOut(BaseModel):
    id: int
    event: str
    event_id: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None
