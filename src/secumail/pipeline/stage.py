"""What a stage is, and what it may use (the per-process service registry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from secumail.config import Settings
from secumail.errors import NotFound
from secumail.pipeline.bus import Bus, Job, StageResult, Verdict
from secumail.store.records import Account
from secumail.ttl_cache import TtlCache

if TYPE_CHECKING:
    from secumail.net.dns import Resolver
    from secumail.pipeline.intake import Intake
    from secumail.pipeline.mx_connector import MxConnector
    from secumail.pipeline.route_planner import RoutePlanner
    from secumail.pipeline.scanning import Scanner
    from secumail.pki.dkim_keyring import DkimKeyring
    from secumail.pki.evidence import EvidenceKey
    from secumail.pki.smime_issuer import SmimeIssuer
    from secumail.spool.body_store import BodyStore
    from secumail.store.counters import Counters
    from secumail.store.metadata import MetadataStore
    from secumail.store.routing import RoutingStore
    from secumail.store.signing import SigningStore
    from secumail.store.suppressions import SuppressionStore


@dataclass
class StageContext:
    """Everything a stage may use; built once per process by the composition root."""

    settings: Settings
    store: MetadataStore
    bodies: BodyStore
    bus: Bus
    resolver: Resolver
    intake: Intake
    signing: SigningStore
    keyring: DkimKeyring
    smime: SmimeIssuer
    evidence_key: EvidenceKey
    routing: RoutingStore
    planner: RoutePlanner
    connector: MxConnector
    suppressions: SuppressionStore
    # The key of bounce addresses (`mail.verp`) when the inbound MX receives them; None:
    # messages keep their sender's return path.
    verp_key: bytes | None = None
    # The virus and spam check (stage `scan`, and acceptance with `scan.inline`).
    scanner: Scanner | None = None
    counters: Counters | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # RSA signing in a thread lets a process use a second core (OpenSSL drops the GIL);
    # with a worker process per core already, the hand-off to the thread and back only
    # costs (measured: ~3% of the CPU per message with 2 workers on 2 cores).
    sign_in_thread: bool = True
    _accounts: TtlCache[Account | None] = field(default_factory=lambda: TtlCache(1.0))

    async def account(self, account_id: str | None) -> Account | None:
        """The account of a message (memoised for a second: a burst costs one read)."""
        if not account_id:
            return None

        async def load() -> Account | None:
            try:
                return await self.store.get_account(account_id)
            except NotFound:
                return None

        return await self._accounts.get(account_id, load)


class Stage(Protocol):
    """One job: consume a message job, do one thing, return a verdict.

    `name` is the stage's queue. `verdicts` is the closed set of verdicts its `handle`
    may return: the runner treats any other as a bug in the stage (logged, and the job
    retried with backoff, never dropped), so a stage's outcomes can be read from its
    class alone.
    """

    name: str
    verdicts: frozenset[Verdict]

    def __init__(self, ctx: StageContext) -> None: ...

    async def handle(self, job: Job) -> StageResult: ...

    async def close(self) -> None: ...
