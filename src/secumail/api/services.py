"""What the API asks of the gateway's services: exactly the members its handlers use.

The composition root (`secumail.app.Services`) provides them; the API, a layer below it,
sees them through this Protocol, so each use is type-checked without importing `app`.
"""

from __future__ import annotations

from typing import Protocol

from secumail.net.dns import Resolver
from secumail.pipeline.acceptance import MessageAcceptor
from secumail.pipeline.account_alerts import AccountAlerts
from secumail.pipeline.bus import Bus
from secumail.pipeline.domain_health import DomainHealth
from secumail.pipeline.domain_setup import DomainSetup
from secumail.pipeline.intake import Intake
from secumail.pipeline.preflight import Preflight
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.pki.evidence import EvidenceKey
from secumail.store.account_events import AccountEventLog
from secumail.store.audit import AuditLog
from secumail.store.counters import Counters
from secumail.store.idempotency import IdempotencyStore
from secumail.store.metadata import MetadataStore
from secumail.store.personal_data import PersonalData
from secumail.store.signing import SigningStore
from secumail.store.suppressions import SuppressionStore
from secumail.store.webhooks import WebhookStore


class ApiServices(Protocol):
    """Read-only members (attributes or cached properties of the real services)."""

    # accounts, credentials, domains, messages and their statistics
    @property
    def store(self) -> MetadataStore: ...

    # sending: acceptance, then the intake queue (and its bound, for /health)
    @property
    def acceptor(self) -> MessageAcceptor: ...

    @property
    def intake(self) -> Intake: ...

    @property
    def bus(self) -> Bus: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def suppressions(self) -> SuppressionStore: ...

    # sender domains: DNS records, DKIM keys, verification
    @property
    def domains(self) -> DomainSetup: ...

    @property
    def keyring(self) -> DkimKeyring: ...

    # the daily health check of a domain (its alerts: account_alerts, below)
    @property
    def domain_health(self) -> DomainHealth: ...

    @property
    def resolver(self) -> Resolver: ...

    @property
    def preflight(self) -> Preflight: ...

    # evidence and accountability
    @property
    def signing(self) -> SigningStore: ...

    @property
    def evidence_key(self) -> EvidenceKey: ...

    @property
    def audit(self) -> AuditLog: ...

    # webhooks and what they report
    @property
    def webhooks(self) -> WebhookStore: ...

    @property
    def account_events(self) -> AccountEventLog: ...

    # alerts told and not yet over (sender TLS, failed logins, domain DNS)
    @property
    def account_alerts(self) -> AccountAlerts: ...

    # operator counters (bounces the inbound MX dropped)
    @property
    def counters(self) -> Counters: ...

    # GDPR: a person's records
    @property
    def personal_data(self) -> PersonalData: ...
