"""The composition root: builds every part from the settings and runs them.

Nothing else in Secumail picks concrete classes; this module does, once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from secumail.api.context import ApiContext, RateLimiter
from secumail.api.server import ApiServer, create_app
from secumail.api.tokens import OidcVerifier, TokenError, TokenIssuer, jwks_from
from secumail.config import Settings
from secumail.errors import ConfigError, ListenError
from secumail.mail.smtp_data import BareNewline
from secumail.mail.verp import domain_problem
from secumail.net.blocking_dns import BlockingDns
from secumail.net.dns import Resolver
from secumail.net.handoff import HandoffReceiver, HandoffSender
from secumail.net.https_client import HttpsError, request
from secumail.net.smtp_server import SessionLimits, SubmissionServer
from secumail.net.tls import ensure_gateway_certificate, server_context, verifying_client_context
from secumail.pipeline.acceptance import MessageAcceptor
from secumail.pipeline.account_alerts import AccountAlerts
from secumail.pipeline.auth_throttle import AuthThrottle
from secumail.pipeline.bounce_intake import BounceIntake
from secumail.pipeline.bus import Bus
from secumail.pipeline.domain_health import DomainHealth
from secumail.pipeline.domain_setup import DomainSetup
from secumail.pipeline.embedded_bus import BUS_SCHEMA, EmbeddedBus
from secumail.pipeline.inbound_mx import InboundMx
from secumail.pipeline.intake import Intake
from secumail.pipeline.mta_sts_source import StsPolicySource
from secumail.pipeline.mx_connector import MxConnector
from secumail.pipeline.nats_bus import NAME, NATS_BUS_SCHEMA, NatsBus
from secumail.pipeline.preflight import Preflight
from secumail.pipeline.route_planner import RoutePlanner
from secumail.pipeline.runner import StageRunner
from secumail.pipeline.scanning import Scanner
from secumail.pipeline.sender_auth import SenderAuthenticator
from secumail.pipeline.sender_watch import SenderWatch
from secumail.pipeline.stage import Stage, StageContext
from secumail.pipeline.submission import SubmissionPolicyImpl
from secumail.pipeline.test_address import TestAddressIntake
from secumail.pipeline.tls_reports import TlsReporter
from secumail.pipeline.tlsrpt_intake import TlsReportIntake
from secumail.pipeline.webhooks import WebhookDispatcher
from secumail.pki.ca import CertificateAuthority
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.pki.evidence import EvidenceKey
from secumail.pki.key_source import create_ca, ensure_evidence_key, load_ca, load_evidence_key
from secumail.pki.smime_issuer import SmimeIssuer
from secumail.spool.body_store import SPOOL_SCHEMA, BodyStore
from secumail.spool.master_key import ensure_master_key, load_master_key
from secumail.store.account_events import AccountEventLog
from secumail.store.audit import AuditLog, derive_key
from secumail.store.audit_chain import AuditKind
from secumail.store.counters import Counters
from secumail.store.credential_tls import CredentialTlsStore
from secumail.store.database import Database
from secumail.store.domain_health import DomainHealthStore
from secumail.store.idempotency import IdempotencyStore
from secumail.store.metadata import MetadataStore
from secumail.store.personal_data import PersonalData
from secumail.store.retention import MetadataRetention
from secumail.store.routing import RoutingStore
from secumail.store.schema import SCHEMA
from secumail.store.signing import SigningStore
from secumail.store.suppressions import SuppressionStore
from secumail.store.test_replies import ReplyRateLimits
from secumail.store.tls_reports_received import TlsReportsReceived
from secumail.store.webhooks import WebhookStore

log = logging.getLogger("secumail")

STAGE_GROUP = "secumail.stages"


VERP_KEY_INFO = b"secumail/verp/v1"


def initialise(settings: Settings) -> list[str]:
    """Create data_dir, the master key, the gateway certificate, the S/MIME CA and the
    evidence key when absent (idempotent)."""
    made = []
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.master_key_file.exists():
        ensure_master_key(settings.master_key_file)
        made.append(str(settings.master_key_file))
    if settings.tls.cert_file is None and settings.tls.key_file is None:
        if ensure_gateway_certificate(
            settings.cert_file, settings.key_file, settings.server.hostname
        ):
            made.append(str(settings.cert_file))
    else:
        # The operator's own certificate: never replaced by a self-signed one (a mistyped
        # key_file would otherwise overwrite the real chain).
        for setting, path in (("cert_file", settings.cert_file), ("key_file", settings.key_file)):
            if not path.is_file():
                raise ConfigError(f"tls.{setting} {path} does not exist")
    if not (settings.ca_dir / "root.pem").exists():
        create_ca(settings.pki, settings.ca_dir, settings.signing.ca_organisation)
        made.append(str(settings.ca_dir / "root.pem"))
    if ensure_evidence_key(settings.pki, settings.evidence_key_file):
        made.append(
            f"evidence key on {settings.pki.pkcs11_token}"
            if settings.pki.pkcs11_module
            else str(settings.evidence_key_file)
        )
    return made


def sqlite_path(settings: Settings) -> str:
    url = settings.storage_url
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"storage.url {url!r}: only sqlite:/// is supported in this version")
    return url[len("sqlite:///") :]


def load_stage_classes(names: list[str]) -> dict[str, type[Stage]]:
    """Stage classes by name from the `secumail.stages` entry points (plug-ins included)."""
    found = {ep.name: ep for ep in entry_points(group=STAGE_GROUP)}
    classes: dict[str, type[Stage]] = {}
    for name in names:
        if name not in found:
            raise ConfigError(f"pipeline.stages: no stage named {name!r} (known: {sorted(found)})")
        classes[name] = found[name].load()
    return classes


class Services:
    """The process-wide parts: database, store, spool, bus, resolver, intake."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        nats_url = settings.bus.url.startswith("nats://")
        if settings.bus.url != "embedded" and not nats_url:
            raise ConfigError(
                f"bus.url {settings.bus.url!r}: 'embedded' or nats://host:port"
                f" ({settings.where('bus.url')})"
            )
        if nats_url and not NAME.fullmatch(settings.bus.stream):
            raise ConfigError(
                f"bus.stream {settings.bus.stream!r}: letters, digits, '_' and '-' only"
                f" ({settings.where('bus.stream')})"
            )
        self.db = Database(Path(sqlite_path(settings)))
        self.db.open(SCHEMA + SPOOL_SCHEMA + (NATS_BUS_SCHEMA if nats_url else BUS_SCHEMA))
        self.store = MetadataStore(self.db)
        master = load_master_key(settings.master_key_file)
        self.bodies = BodyStore(self.db, master)
        self.signing = SigningStore(self.db)
        self.keyring = DkimKeyring(self.signing, master)
        self._master = master
        self.audit = AuditLog(self.db, master)
        self.bus: Bus = (
            NatsBus(
                settings.bus.url,
                self.db,
                stream=settings.bus.stream,
                bound=settings.bus.queue_bound,
                lease=settings.bus.lease,
            )
            if nats_url
            else EmbeddedBus(
                self.db,
                bound=settings.bus.queue_bound,
                lease=settings.bus.lease,
                max_wait=settings.bus.max_wait,
                queues=settings.pipeline.stages,
            )
        )
        self.resolver = Resolver(
            settings.dns.nameservers, settings.dns.timeout, trust_ad=settings.dns.trust_ad
        )
        stages = settings.pipeline.stages
        if not stages:
            raise ConfigError("pipeline.stages is empty")
        self.intake = Intake(self.store, self.bodies, self.bus, stages[0])

    @functools.cached_property
    def ca(self) -> CertificateAuthority:
        return load_ca(self.settings.pki, self.settings.ca_dir)

    @functools.cached_property
    def smime(self) -> SmimeIssuer:
        async def issued(address: str, cert: x509.Certificate) -> None:
            await self.audit.record(
                "gateway:smime",
                AuditKind.SMIME_ISSUED,
                address,
                {
                    "serial": format(cert.serial_number, "x"),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "sha256": cert.fingerprint(hashes.SHA256()).hex(),
                },
            )

        return SmimeIssuer(
            self.ca,
            self.signing,
            self._master,
            days=self.settings.signing.smime_validity_days,
            on_issued=issued,
        )

    @functools.cached_property
    def evidence_key(self) -> EvidenceKey:
        return load_evidence_key(self.settings.pki, self.settings.evidence_key_file)

    @functools.cached_property
    def domains(self) -> DomainSetup:
        s = self.settings
        return DomainSetup(
            self.store,
            self.keyring,
            self.resolver,
            hostname=s.server.hostname,
            gateway_domain=s.gateway_domain,
        )

    @functools.cached_property
    def personal_data(self) -> PersonalData:
        return PersonalData(self.db, self.audit, self._master)

    @functools.cached_property
    def retention(self) -> MetadataRetention:
        return MetadataRetention(self.db, self.settings.gdpr.retention_days)

    async def purge_expired(self, actor: str) -> dict[str, Any]:
        """GDPR retention: remove what is past its period; audited when anything went."""
        report = await self.retention.purge()
        if report.total:
            await self.audit.record(
                actor, AuditKind.RETENTION_PURGED, "metadata", report.as_detail()
            )
        return report.as_detail() | {"by_account": report.by_account}

    @functools.cached_property
    def suppressions(self) -> SuppressionStore:
        return SuppressionStore(self.db)

    @functools.cached_property
    def counters(self) -> Counters:
        return Counters(self.db)

    @functools.cached_property
    def tls_reports_received(self) -> TlsReportsReceived:
        return TlsReportsReceived(self.db)

    @functools.cached_property
    def idempotency(self) -> IdempotencyStore:
        return IdempotencyStore(self.db)

    @functools.cached_property
    def account_events(self) -> AccountEventLog:
        return AccountEventLog(self.db)

    @functools.cached_property
    def account_alerts(self) -> AccountAlerts:
        return AccountAlerts(self.db, self.store, self.intake, hostname=self.settings.server.hostname)

    @functools.cached_property
    def credential_tls(self) -> CredentialTlsStore:
        return CredentialTlsStore(self.db)

    @functools.cached_property
    def sender_watch(self) -> SenderWatch:
        """The TLS of each credential's submissions and bursts of failed logins (SMTP and
        API of this process together), told through `account_alerts`."""
        s = self.settings.submission
        return SenderWatch(
            self.account_alerts,
            self.credential_tls,
            auth_failures=s.auth_alert_failures,
            auth_window=s.auth_alert_window,
        )

    @functools.cached_property
    def acceptor(self) -> MessageAcceptor:
        s = self.settings
        return MessageAcceptor(
            self.store,
            self.intake,
            self.suppressions,
            hostname=s.server.hostname,
            max_message_size=s.submission.max_message_size,
            max_recipients=s.submission.max_recipients,
            max_hops=s.submission.max_hops,
            inline_scanner=self.scanner if s.scan.inline else None,
        )

    @functools.cached_property
    def routing(self) -> RoutingStore:
        return RoutingStore(self.db)

    @functools.cached_property
    def planner(self) -> RoutePlanner:
        s = self.settings
        sts = StsPolicySource(
            self.resolver,
            self.routing,
            ssl_context=verifying_client_context(s.tls.trust_file),
            port=s.mta_sts.port,
            timeout=s.mta_sts.timeout,
        )
        return RoutePlanner(self.resolver, sts, self.routing, port=s.delivery.port)

    @functools.cached_property
    def connector(self) -> MxConnector:
        s = self.settings
        return MxConnector(s.delivery, trust_file=s.tls.trust_file, helo=s.server.hostname)

    @functools.cached_property
    def preflight(self) -> Preflight:
        return Preflight(
            self.planner, self.connector, cache_seconds=self.settings.delivery.preflight_cache
        )

    @functools.cached_property
    def domain_health(self) -> DomainHealth:
        s = self.settings
        return DomainHealth(
            self.store,
            DomainHealthStore(self.db),
            self.keyring,
            self.resolver,
            # its own probe without the preflight cache: each check sees the MX as it is now
            Preflight(self.planner, self.connector, cache_seconds=0.0),
            self.account_alerts,
            hostname=s.server.hostname,
            gateway_domain=s.gateway_domain,
            bounce_addresses=bool(s.inbound.listen),
        )

    @functools.cached_property
    def webhooks(self) -> WebhookStore:
        return WebhookStore(self.db)

    @functools.cached_property
    def webhook_dispatcher(self) -> WebhookDispatcher:
        s = self.settings
        return WebhookDispatcher(
            self.webhooks,
            self.resolver,
            trust_file=s.tls.trust_file,
            allow_private=s.api.webhooks_allow_private,
            port_override=s.api.webhooks_port,
        )

    @functools.cached_property
    def verp_key(self) -> bytes:
        """The key of this installation's bounce addresses (`mail.verp`)."""
        return derive_key(self._master, VERP_KEY_INFO)

    @functools.cached_property
    def auth_throttle(self) -> AuthThrottle:
        """Failed logins of this process, SMTP AUTH and the API's token endpoint together:
        guessing through both doors costs one budget."""
        s = self.settings.submission
        return AuthThrottle(s.auth_failure_limit, s.auth_failure_window)

    def api_context(self) -> ApiContext:
        s = self.settings
        issuer = TokenIssuer(s.api_key_file, f"https://{s.server.hostname}", ttl=s.api.token_ttl)
        oidc = None
        if s.api.oidc.issuer:
            oidc = OidcVerifier(
                s.api.oidc.issuer,
                s.api.oidc.audience,
                s.api.oidc.algorithms,
                s.api.oidc.account_claim,
                self._jwks_fetcher(s.api.oidc.jwks_url),
            )
        return ApiContext(
            s,
            self,
            issuer,
            oidc,
            RateLimiter(s.api.rate_limit_per_minute),
            throttle=self.auth_throttle,
            senders=self.sender_watch,
        )

    def _jwks_fetcher(self, url: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        ctx = verifying_client_context(self.settings.tls.trust_file)

        async def fetch() -> dict[str, Any]:
            parts = urlsplit(url)
            addresses = await self.resolver.addresses(parts.hostname or "")
            if not addresses:
                raise TokenError(f"cannot resolve {parts.hostname}")
            try:
                status, _headers, body = await request(
                    "GET",
                    url,
                    ssl_context=ctx,
                    timeout=10,
                    connect_to=(addresses[0], parts.port or 443),
                )
            except HttpsError as exc:
                raise TokenError(f"cannot fetch the issuer's keys: {exc}") from exc
            if status != 200:
                raise TokenError(f"the issuer's JWKS answered HTTP {status}")
            return jwks_from(body)

        return fetch

    @functools.cached_property
    def tls_reporter(self) -> TlsReporter:
        s = self.settings
        return TlsReporter(
            self.routing,
            self.resolver,
            self.intake,
            gateway_domain=s.gateway_domain,
            trust_file=s.tls.trust_file,
            https_port=s.tlsrpt.https_port,
        )

    def stage_context(self) -> StageContext:
        return StageContext(
            self.settings,
            self.store,
            self.bodies,
            self.bus,
            self.resolver,
            self.intake,
            signing=self.signing,
            keyring=self.keyring,
            smime=self.smime,
            evidence_key=self.evidence_key,
            routing=self.routing,
            planner=self.planner,
            connector=self.connector,
            suppressions=self.suppressions,
            verp_key=self.verp_key if self.settings.inbound.listen else None,
            scanner=self.scanner,
            counters=self.counters,
        )

    @functools.cached_property
    def scanner(self) -> Scanner:
        return Scanner.from_settings(self.settings.scan, self.counters)

    def close(self) -> None:
        self.db.close()


def _listen_failed(settings: Settings, setting: str, exc: ListenError) -> ConfigError:
    """"api.listen: cannot listen on 0.0.0.0:8443: address already in use (change …)"."""
    return ConfigError(f"{setting}: {exc} ({settings.where(setting)})")


class Gateway:
    """`secumail serve`: the submission server and the stage runners in one process."""

    def __init__(
        self,
        settings: Settings,
        roles: set[str],
        *,
        worker: int = 0,
        workers: int = 1,
        handoff_to: HandoffSender | None = None,
        handoff_from: HandoffReceiver | None = None,
    ) -> None:
        self.handoff_to = handoff_to  # the first worker: it deals connections to the others
        self.handoff_from = handoff_from  # the others: connections dealt to this one
        self.settings = settings
        self.roles = roles
        self.worker = worker  # this process's index among `workers` identical processes
        self.workers = workers
        self.services = Services(settings)
        self.submission: SubmissionServer | None = None
        self.inbound: SubmissionServer | None = None
        self.sender_auth: SenderAuthenticator | None = None  # the test address's checks
        self.runners: list[StageRunner] = []
        self.api: ApiServer | None = None
        self.stages: list[Stage] = []
        self._stop = asyncio.Event()

    def _wants(self, role: str) -> bool:
        return "all" in self.roles or role in self.roles

    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT (a failed start shuts down what started)."""
        try:
            await self.start()
        except BaseException:
            await self.shutdown([])
            raise
        # Everything built at start (modules, settings, keys, caches) lives as long as the
        # process: out of the collector's sight, so a full collection scans only what
        # came since. Measured under load before this: 40-70 ms pauses of the whole
        # gateway, the worst latencies of the run.
        gc.collect()
        gc.freeze()
        await self.run_until_stopped()

    async def start(self) -> None:
        if self._wants("submission"):
            await self._start_submission()
        if self._wants("inbound") and self.settings.inbound.listen and self.handoff_from is None:
            await self._start_inbound()
        await self.services.keyring.ensure_keys(self.settings.gateway_domain)
        self._build_runners()
        if self.settings.pipeline.chain:
            self._chain_runners()
        log.info("stages running: %s", ", ".join(r.queue for r in self.runners) or "none")
        self._say_what_is_scanned()
        if self.settings.api.enabled and self._wants("api"):
            await self._start_api()

    def _say_what_is_scanned(self) -> None:
        """Loud when messages leave without a virus or spam check (issue: no silent gaps)."""
        if not any(r.queue == "scan" for r in self.runners):
            if "scan" not in self.settings.pipeline.stages:
                log.warning(
                    "messages are NOT scanned for viruses or spam: pipeline.stages has no 'scan'"
                )
            return
        engines = self.services.scanner.engines
        if not engines:
            log.warning(
                "messages are NOT scanned for viruses or spam: set scan.clamd and/or "
                "scan.rspamd (content limits still apply)"
            )
        else:
            log.info("scanning with %s%s", " and ".join(engines), " (inline)" if self.settings.scan.inline else "")

    # -- the steps of start ----------------------------------------------------------
    def _session_limits(self) -> SessionLimits:
        s = self.settings
        return SessionLimits(
            hostname=s.server.hostname,
            max_message_size=s.submission.max_message_size,
            max_recipients=s.submission.max_recipients,
            idle_timeout=s.submission.idle_timeout,
            data_timeout=s.submission.data_timeout,
            max_errors=s.submission.max_errors,
            tls_handshake_timeout=s.submission.tls_handshake_timeout,
            max_junk_commands=s.submission.max_junk_commands,
            bare_newline=BareNewline(s.submission.bare_newline),
        )

    async def _start_submission(self) -> None:
        """The SMTP submission server: listening, or (a worker) served by the first one."""
        s = self.settings
        sv = self.services
        policy = SubmissionPolicyImpl(
            sv.store,
            sv.acceptor,
            throttle=sv.auth_throttle,
            audit=sv.audit,
            watch=sv.sender_watch,
        )
        self.submission = SubmissionServer(
            policy,
            self._session_limits(),
            server_context(s.cert_file, s.key_file, s.submission.client_ca_file),
            max_connections=s.submission.max_connections,
            max_connections_per_client=s.submission.max_connections_per_client,
            handoff=self.handoff_to,
        )
        if self.handoff_from is not None:
            self.submission.receive_from(self.handoff_from)
            log.info("submission: serving the connections worker 0 hands over")
        else:
            for setting, plain, implicit in (
                ("submission.listen", s.submission.listen, []),
                ("submission.listen_tls", [], s.submission.listen_tls),
            ):
                try:
                    await self.submission.listen(plain, implicit)
                except ListenError as exc:
                    raise _listen_failed(s, setting, exc) from exc
        for host, port, implicit_tls in self.submission.bound:
            log.info(
                "submission listening on %s:%d (%s)",
                host,
                port,
                "implicit TLS" if implicit_tls else "STARTTLS",
            )

    async def _start_inbound(self) -> None:
        """The inbound MX for late bounces (`pipeline.bounce_intake`) and TLS reports
        (`pipeline.tlsrpt_intake`; `pipeline.inbound_mx` dispatches), in the first process
        only: the same session machinery as submission, another policy, its own limits."""
        s = self.settings
        sv = self.services
        problem = domain_problem(s.server.hostname)
        if problem:
            raise ConfigError(
                f"inbound.listen: bounce addresses are @server.hostname, and {problem}"
                f" ({s.where('server.hostname')})"
            )
        bounces = BounceIntake(
            sv.store,
            sv.suppressions,
            sv.counters,
            sv.bus,
            verp_key=sv.verp_key,
            hostname=s.server.hostname,
        )
        reports = (
            TlsReportIntake(
                sv.tls_reports_received,
                sv.counters,
                local_part=s.inbound.tlsrpt_address,
                hostname=s.server.hostname,
                per_client_per_day=s.inbound.tlsrpt_per_client_per_day,
            )
            if s.inbound.tlsrpt_address
            else None
        )
        if s.inbound.test_address:
            self.sender_auth = SenderAuthenticator(
                BlockingDns(s.dns.nameservers, s.dns.timeout), timeout=s.dns.timeout
            )
        tests = (
            TestAddressIntake(
                sv.intake,
                self.sender_auth,
                ReplyRateLimits(
                    sv.db,
                    per_domain=s.inbound.test_replies_per_domain_per_hour,
                    per_network=s.inbound.test_replies_per_network_per_hour,
                ),
                sv.counters,
                local_part=s.inbound.test_address,
                hostname=s.server.hostname,
            )
            if self.sender_auth is not None
            else None
        )
        policy = InboundMx(bounces, reports, tests)
        limits = dataclasses.replace(
            self._session_limits(),
            max_message_size=s.inbound.max_size,
            max_recipients=s.inbound.max_recipients,
        )
        self.inbound = SubmissionServer(
            policy,
            limits,
            server_context(s.cert_file, s.key_file),
            max_connections=s.submission.max_connections,
            max_connections_per_client=s.submission.max_connections_per_client,
        )
        try:
            await self.inbound.listen(s.inbound.listen, [])
        except ListenError as exc:
            raise _listen_failed(s, "inbound.listen", exc) from exc
        for host, port, _tls in self.inbound.bound:
            log.info(
                "inbound MX listening on %s:%d (bounces%s%s; STARTTLS offered)",
                host,
                port,
                ", TLS reports" if reports else "",
                ", test address" if tests else "",
            )

    def _build_runners(self) -> None:
        """A stage and its runner for every pipeline stage this process runs."""
        s = self.settings
        sv = self.services
        ctx = sv.stage_context()
        ctx.sign_in_thread = self.workers < (os.cpu_count() or 1)
        names = s.pipeline.stages
        classes = load_stage_classes(names)
        for i, name in enumerate(names):
            if not (self._wants("stages") or self._wants(name)):
                continue
            stage = classes[name](ctx)
            concurrency = s.delivery.concurrency if name == "deliver" else s.pipeline.concurrency
            runner = StageRunner(
                stage,
                sv.bus,
                next_queue=names[i + 1] if i + 1 < len(names) else None,
                concurrency=concurrency,
                reject_queue="notify" if "notify" in names else None,
            )
            self.stages.append(stage)
            self.runners.append(runner)

    def _chain_runners(self) -> None:
        """`pipeline.chain`: a job done by one stage goes straight to the next one's runner
        in this process."""
        by_queue = {r.queue: r for r in self.runners}
        for r in self.runners:
            r.successor = by_queue.get(r.next_queue or "")
        # Accepted here, handled here: the first stage takes new jobs from the intake.
        self.services.intake.local = by_queue.get(self.settings.pipeline.stages[0])

    async def _start_api(self) -> None:
        s = self.settings
        try:
            self.api = ApiServer(
                create_app(self.services.api_context()),
                s.api.listen,
                cert_file=s.cert_file,
                key_file=s.key_file,
                plain_http=s.api.plain_http,
                reuse_port=self.workers > 1,
            )
            await self.api.start()
        except ListenError as exc:
            raise _listen_failed(s, "api.listen", exc) from exc
        for server in self.api.servers:
            log.info(
                "API listening on %s:%d (%s)",
                server.config.host,
                server.config.port,
                "HTTP" if s.api.plain_http else "HTTPS",
            )

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [loop.create_task(r.run(), name=f"stage-{r.queue}") for r in self.runners]
        # Once per installation, not per worker: the first worker sends reports and webhooks.
        if self.runners and self.worker == 0 and self.settings.tlsrpt.enabled:
            tasks.append(loop.create_task(self._daily_reports(), name="tlsrpt"))
        if self.runners and self.worker == 0:
            tasks.append(loop.create_task(self.services.webhook_dispatcher.run(), name="webhooks"))
            tasks.append(loop.create_task(self._daily_purge(), name="gdpr-purge"))
            tasks.append(
                loop.create_task(
                    self.services.domain_health.run(self.settings.domains.health_interval),
                    name="domain-health",
                )
            )
        # Every process: its own failed-login counts and TLS records (sender_watch).
        if self._wants("submission") or (self.settings.api.enabled and self._wants("api")):
            tasks.append(loop.create_task(self.services.sender_watch.run(), name="senders"))
        stopper = loop.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                log.error("stage runner crashed: %r", t.exception())
        log.info("shutting down")
        await self.shutdown(tasks)

    async def _daily_reports(self) -> None:
        """RFC 8460: yesterday's TLS reports, checked hourly, each sent once."""
        while True:
            try:
                await self.services.tls_reporter.send_due()
            except Exception:
                log.exception("sending TLS reports failed; trying again in an hour")
            await asyncio.sleep(3600)

    async def _daily_purge(self) -> None:
        """GDPR retention: metadata past its account's period goes, once a day (and at start)."""
        while True:
            try:
                done = await self.services.purge_expired("gateway:retention")
                if done["messages"]:
                    log.info("retention purge removed %d finished messages", done["messages"])
            except Exception:
                log.exception("the retention purge failed; trying again at the next interval")
            await asyncio.sleep(self.settings.gdpr.purge_interval)

    async def shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        if self.submission is not None:
            await self.submission.close(grace=10.0)
        if self.inbound is not None:
            await self.inbound.close(grace=10.0)
        if self.sender_auth is not None:
            self.sender_auth.close()
        if self.api is not None:
            await self.api.stop()
        await asyncio.gather(*(r.stop(grace=10.0) for r in self.runners))
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for stage in self.stages:
            await stage.close()
        if "scanner" in self.services.__dict__:  # built (cached_property): its HTTP client
            await self.services.scanner.close()
        if "sender_watch" in self.services.__dict__:  # built: write what it holds
            try:
                await self.services.sender_watch.close()
            except Exception:
                log.exception("writing the senders' TLS records at shutdown failed")
        await self.services.bus.close()
        # Let a batch in flight (or one waiting for another worker's transaction) finish
        # on this loop before the blocking close.
        await self.services.db.drain()
        self.services.close()
        log.info("stopped")

    def stop(self) -> None:
        self._stop.set()
