"""One typed settings model: a TOML file, overridden by SECUMAIL_<SECTION>__<KEY> variables.

`load_settings(path)` reads the file named by `--config` or SECUMAIL_CONFIG (a missing
file means defaults here; the command line refuses a named file that does not exist),
then applies environment overrides; values in the environment are
parsed as JSON when they look like it (lists, numbers, booleans), else taken as text,
and lists may also be given comma-separated.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from secumail.errors import ConfigError

ENV_PREFIX = "SECUMAIL_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and str(field.annotation).startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, int | float):
                return [value]
        return value


class ServerSettings(_Section):
    # Name in greetings, EHLO and notices (default: this host's FQDN); a public DNS name.
    hostname: str = Field(default_factory=socket.getfqdn)
    data_dir: Path = Path("var")  # database, keys, certificates; relative: to the cwd
    log_level: str = "INFO"  # logs go to stderr as logfmt lines, never message content
    # Processes (`serve --workers`): "auto" is one per core this process may run on.
    workers: int | Literal["auto"] = "auto"

    @field_validator("workers")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('at least 1, or "auto"')
        return value


class SubmissionSettings(_Section):
    listen: list[str] = ["0.0.0.0:587"]  # STARTTLS (RFC 6409): "host:port", "[v6]:port"
    listen_tls: list[str] = ["0.0.0.0:465"]  # implicit TLS (RFC 8314)
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 100
    # Received fields a message may carry (Postfix's hopcount_limit); more is a mail loop.
    max_hops: int = Field(default=50, ge=1)
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7
    data_timeout: float = 600.0
    # A TLS handshake (implicit TLS, STARTTLS) must finish within this; until it has, the
    # connection is not yet a session and no session limit counts it.
    tls_handshake_timeout: float = 30.0
    max_connections: int = 1000
    # Sessions from one client address (per process): one client cannot take them all.
    max_connections_per_client: int = 100
    max_junk_commands: int = Field(default=100, ge=1)  # NOOP, RSET, VRFY, HELP per session
    auth_failure_limit: int = 5
    auth_failure_window: float = 300.0
    # Watching senders (pipeline/sender_watch.py): this many failed logins of one existing
    # credential within the window (seconds; throttled attempts count) tell its account
    # once (`auth_failures`); a whole window without a failure tells it is over.
    # CA certificates (PEM) that client certificates on the submission listeners must chain
    # to. Set: a client certificate is asked for (not required) and one that does not
    # verify fails the handshake (Python's ssl cannot take an unverified one); the watch
    # warns (`sender_tls_warning`) when a credential's certificate expires within 30 days.
    # None (default): no certificate is asked for.
    client_ca_file: Path | None = None
    auth_alert_failures: int = Field(default=10, ge=2)
    auth_alert_window: float = Field(default=600.0, gt=0)
    max_errors: int = 10
    # A line ending in a bare LF (Postfix 3.9's smtpd_forbid_bare_newline): "normalize"
    # takes it as CRLF, "reject" refuses it (554 5.5.2 in DATA, 500 5.5.2 for a command).
    # Either way only CRLF "." CRLF ends the data and a bare CR is refused.
    bare_newline: Literal["normalize", "reject"] = "normalize"


class InboundSettings(_Section):
    # The inbound MX: late bounces to the bounce addresses of messages sent
    # (`bounce+…@server.hostname`) and TLS reports (tlsrpt_address), nothing else.
    # "host:port", port 25 in production, with an MX record for server.hostname
    # pointing at it. Empty (the default): not listening,
    # and bounces that come after a delivery are not seen. Timeouts, error and junk command
    # limits and connections per client are submission's.
    listen: list[str] = []
    max_size: int = Field(default=10 * 1024 * 1024, ge=1024)  # a bounce carries the message
    max_recipients: int = Field(default=100, ge=1)  # bounce addresses per transaction
    # The local part of the address for TLS reports (RFC 8460) about mail to the gateway
    # itself: <tlsrpt_address>@server.hostname, published as rua= in the _smtp._tls TXT
    # record. Reports are read and kept as metadata (`secumail tlsrpt received`). "": off.
    tlsrpt_address: str = Field(
        default="tlsrpt",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$",  # no "+": never a bounce address
    )
    # Reports kept per client network (IPv4 /24, IPv6 /48) in any 24 hours; more are
    # answered 250, dropped and counted (tlsrpt_dropped:over_limit). 0: no bound.
    tlsrpt_per_client_per_day: int = Field(default=20, ge=0)
    # The local part of the test address: anyone may write to <test_address>@server.hostname
    # and gets a report (Dutch and English) on how their server connected (TLS) and
    # authenticated (SPF, DKIM, DMARC) — only over TLS (plaintext: refused with 554 5.7.10),
    # only to a sender whose domain passed SPF or aligned DKIM, and rate-limited. "": off.
    test_address: str = Field(
        default="test",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$",  # no "+": never a bounce address
    )
    # Test replies per hour at most, to one sender domain and to one client network (IPv4
    # /24, IPv6 /48); over it a message is answered 250 and no reply is sent. 0: none.
    test_replies_per_domain_per_hour: int = Field(default=10, ge=0)
    test_replies_per_network_per_hour: int = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _distinct_addresses(self) -> InboundSettings:
        if self.test_address and self.test_address.lower() == self.tlsrpt_address.lower():
            raise ValueError("test_address must differ from tlsrpt_address")
        return self


class TlsSettings(_Section):
    cert_file: Path | None = None  # default: <data_dir>/tls/gateway.crt, made on first start
    key_file: Path | None = None  # set with cert_file (PEM)
    trust_file: Path | None = None  # extra CA bundle for outbound verification


class DnsSettings(_Section):
    nameservers: list[str] = []  # empty: the system resolver; "host" or "host:port"
    timeout: float = 5.0
    # Trust the AD bit (DNSSEC validated) in answers. Default: only when every nameserver
    # is on loopback (a local validating resolver such as unbound).
    trust_ad: bool | None = None


class DeliverySettings(_Section):
    port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2: 5 minutes for most replies
    # Seconds between attempts for a deferred recipient; the last value repeats.
    retry_schedule: list[float] = [300, 600, 1200, 2400, 3600, 7200, 14400, 28800]
    max_age: float = 5 * 24 * 3600  # then the recipient is `expired`
    concurrency: int = 64
    connection_idle: float = 30.0  # keep a reusable connection this long
    connection_max_messages: int = 500
    connections_per_destination: int = 20  # open connections to one MX address at most
    # Remember the strongest route (DANE > MTA-STS) seen per domain this long; a weaker
    # offer meanwhile is a temporary failure, not a silent downgrade.
    downgrade_memory_days: float = 30.0
    preflight_cache: float = 300.0  # seconds a `secumail check` result is reused


class MtaStsSettings(_Section):
    port: int = 443  # where policies are fetched (tests use another)
    timeout: float = 60.0


class StorageSettings(_Section):
    url: str = ""  # default: sqlite:///<data_dir>/secumail.sqlite


class BusSettings(_Section):
    # "embedded" (queues in the SQLite file) or "nats://host:port" (NATS JetStream,
    # pipeline/nats_bus.py; claims and the stages' writes stay in the metadata store).
    url: str = "embedded"
    stream: str = "SECUMAIL"  # the JetStream stream (and subject prefix) of a NATS bus
    # Work ready for the stages (all queues, deferred retries not counted); at or over it
    # the intake answers 451 4.3.2 / 503. ~10 s of backlog at 200 msg/s.
    queue_bound: int = 2000
    # ... or when a job has waited longer than this for a worker (0: off; embedded bus only).
    max_wait: float = 3.0
    lease: float = 60.0  # a claimed job returns to its queue when not renewed by then


class PipelineSettings(_Section):
    stages: list[str] = ["route", "scan", "sign", "deliver", "notify"]
    concurrency: int = 32  # jobs in flight per stage (deliver has its own)
    # A stage passes a job straight to the next stage when that one runs in the same
    # process (one claim and one settle for the chain), and the intake hands new jobs to
    # the first stage of its own process (written claimed, no claim transaction); off:
    # every hop goes through its queue.
    chain: bool = True


class SigningSettings(_Section):
    # The domain that signs notices, and messages of accounts allowed to fall back to it
    # when their own domain has no published DKIM key. Empty: server.hostname.
    gateway_domain: str = ""
    smime_validity_days: int = 30
    ca_organisation: str = "Secumail"


class PkiSettings(_Section):
    # PKCS#11 HSM for the CA's issuing key and the evidence key. Empty module: file keys
    # in data_dir (the embedded default). The PIN comes from pkcs11_pin_file, else from
    # the environment variable named by pkcs11_pin_env.
    pkcs11_module: str = ""
    pkcs11_token: str = ""
    pkcs11_pin_env: str = "SECUMAIL_PKCS11_PIN"
    pkcs11_pin_file: Path | None = None
    ca_key_label: str = "secumail-ca-issuing"
    ca_key_type: str = "ec-p384"
    evidence_key_label: str = "secumail-evidence"


class TlsRptSettings(_Section):
    enabled: bool = True  # send daily TLS reports (RFC 8460) to domains that ask for them
    https_port: int | None = None  # tests only: the port of https rua endpoints


class OidcSettings(_Section):
    """An external OpenID Connect issuer whose access tokens the API accepts."""

    issuer: str = ""  # empty: only Secumail's own tokens
    audience: str = ""
    jwks_url: str = ""
    account_claim: str = "secumail_account"  # its value names the account (name or id)
    algorithms: list[str] = ["RS256", "ES256"]


class ApiSettings(_Section):
    enabled: bool = True
    listen: list[str] = ["0.0.0.0:8443"]  # HTTPS: the REST API and its OAuth 2 tokens
    # Plain HTTP instead of HTTPS: only allowed when every listen address is loopback.
    plain_http: bool = False
    token_ttl: int = 900
    rate_limit_per_minute: int = 600
    max_check_addresses: int = 50
    # Webhook targets on loopback or private networks (SSRF): off unless the operator says.
    webhooks_allow_private: bool = False
    webhooks_port: int | None = None  # tests only: connect to this port instead of the URL's
    oidc: OidcSettings = OidcSettings()


class ScanSettings(_Section):
    # Virus and spam checks (stage `scan`, before signing; `pipeline/stages/scan.py`).
    # ClamAV: clamd's Unix socket path or "host:port" (loopback: the plaintext travels over
    # it). Empty: no virus scan.
    clamd: str = ""
    # rspamd: its normal worker, e.g. "http://127.0.0.1:11333". Empty: no spam check.
    rspamd: str = ""
    timeout: float = Field(default=60.0, gt=0)  # per scanner and message
    # rspamd score from which a message is refused; unset: rspamd's own `reject` action.
    spam_reject_score: float | None = None
    # Scan during DATA (and the API call): infected or spam is answered 554 5.7.1 (422) and
    # never queued. A scanner that is down then does not refuse: the stage scans later.
    inline: bool = False
    retry_after: float = Field(default=60.0, gt=0)  # seconds between tries while a scanner is down
    # Limits that protect the scanners and the gateway (mail/content_limits.py): a message
    # over one is refused with the reason, never passed on unscanned.
    max_header_fields: int = Field(default=1000, ge=10)
    max_mime_depth: int = Field(default=20, ge=1)
    max_mime_parts: int = Field(default=1000, ge=1)
    max_archive_depth: int = Field(default=5, ge=1)
    max_inflated_mib: int = Field(default=100, ge=1)
    # An encrypted archive cannot be scanned; refused when clamd is set (Secumail already
    # encrypts every hop: a password-protected zip adds nothing but a blind spot).
    refuse_encrypted_archives: bool = True


class NotifySettings(_Section):
    delay_warning_after: float = 4 * 3600  # one "delayed" notice after this long deferred
    sender_local_part: str = "mailer-daemon"


class GdprSettings(_Section):
    # Days the metadata of a finished message is kept (an account may set its own).
    retention_days: int = Field(default=30, ge=1)
    purge_interval: float = Field(default=24 * 3600, gt=0)  # seconds between purges


class DomainsSettings(_Section):
    # Seconds between two health checks of a customer domain (pipeline/domain_health.py):
    # its DNS records and its own MX servers; the domains are spread over the interval.
    health_interval: float = Field(default=24 * 3600, gt=0)


class PluginSettings(BaseModel):
    """Settings of stage plug-ins: one table per stage name, [plugins.<name>], read by the
    plug-in itself (docs/plugins.md) and never interpreted by Secumail."""

    model_config = ConfigDict(extra="allow")

    def get(self, name: str) -> dict[str, Any]:
        """The table of the plug-in `name` (empty when there is none)."""
        table = (self.model_extra or {}).get(name, {})
        return dict(table) if isinstance(table, dict) else {}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = ServerSettings()
    submission: SubmissionSettings = SubmissionSettings()
    inbound: InboundSettings = InboundSettings()
    tls: TlsSettings = TlsSettings()
    dns: DnsSettings = DnsSettings()
    delivery: DeliverySettings = DeliverySettings()
    storage: StorageSettings = StorageSettings()
    bus: BusSettings = BusSettings()
    pipeline: PipelineSettings = PipelineSettings()
    notify: NotifySettings = NotifySettings()
    scan: ScanSettings = ScanSettings()
    signing: SigningSettings = SigningSettings()
    mta_sts: MtaStsSettings = MtaStsSettings()
    pki: PkiSettings = PkiSettings()
    tlsrpt: TlsRptSettings = TlsRptSettings()
    api: ApiSettings = ApiSettings()
    gdpr: GdprSettings = GdprSettings()
    plugins: PluginSettings = PluginSettings()
    domains: DomainsSettings = DomainsSettings()

    _source: Path | None = PrivateAttr(default=None)  # the file read, if any
    _from_env: dict[str, str] = PrivateAttr(default_factory=dict)  # "api.listen" -> variable

    @property
    def source(self) -> Path | None:
        """The settings file these settings were read from (None: defaults and environment)."""
        return self._source

    def where(self, setting: str) -> str:
        """Where an operator changes `setting` ("api.listen"): its variable or the file."""
        if setting in self._from_env:
            return f"change {self._from_env[setting]} in the environment"
        if self._source is not None:
            return f"change {setting} in {self._source}"
        return f"set {setting} in a settings file (--config FILE)"

    @property
    def worker_count(self) -> int:
        """`server.workers` as a number: "auto" is one process per core we may run on."""
        if self.server.workers != "auto":
            return int(self.server.workers)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    # Derived locations, all under data_dir unless set.
    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def cert_file(self) -> Path:
        return self.tls.cert_file or self.data_dir / "tls" / "gateway.crt"

    @property
    def key_file(self) -> Path:
        return self.tls.key_file or self.data_dir / "tls" / "gateway.key"

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "keys" / "master.key"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "pki" / "ca"

    @property
    def evidence_key_file(self) -> Path:
        return self.data_dir / "keys" / "evidence.key"

    @property
    def gateway_domain(self) -> str:
        return (self.signing.gateway_domain or self.server.hostname).lower().rstrip(".")

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "keys" / "api-token.key"

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.data_dir / 'secumail.sqlite'}"


def _env_value(raw: str) -> Any:
    """JSON for lists and tables (`["a", "b"]`); anything else stays text, which the
    settings model converts to the field's type (numbers, booleans, comma lists)."""
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    return raw


def _merge_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Apply SECUMAIL_* variables to `data`; returns {"section.key": variable} of those used."""
    used: dict[str, str] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key or key == "SECUMAIL_CONFIG":
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _env_value(raw)
        used[".".join(path)] = key
    return used


def load_settings(path: Path | None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from `path` (TOML; missing = defaults) and SECUMAIL_* overrides."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    from_env = _merge_env(data, env)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    if not settings.server.data_dir.is_absolute():
        # A relative data_dir is relative to the working directory, as `make run` expects.
        given = "data_dir" in settings.server.model_fields_set
        settings.server.data_dir = Path.cwd() / settings.server.data_dir
        if not given:  # still the default, only made absolute: not "set" (`config show`)
            settings.server.model_fields_set.discard("data_dir")
    settings._from_env = from_env
    if path is not None and path.exists():
        settings._source = path
    return settings
