"""The NATS JetStream bus: the stage queues on JetStream, the claims in the metadata store.

Layout. One stream (`stream`, work-queue retention, file storage) holds every queue; a
job is one message on ``<stream>.<queue>.now`` (claimable at once) or
``<stream>.<queue>.later`` (published with a delay: its due time is in the
``Secumail-Due`` header). Each queue has one durable pull consumer, named after the
queue and filtered on ``<stream>.<queue>.*`` (work-queue streams want consumers whose
filters do not overlap; one stream keeps `depths` to a single STREAM.INFO request).
The message body is JSON ``{"id": message id, "payload": job payload}``: nothing from the
job goes into a header (a header value with a line break would be a header injection).

Claims live in the metadata store, not in JetStream. JetStream's own lease (ack_wait) is
a setting of the consumer, so every worker on a queue would share one lease, and an
acknowledgement carries no proof of which delivery it answers: a worker whose lease ran
out could still acknowledge the job another worker now holds. So a claim is a row in
`bus_claims` (stream sequence, token, attempts, lease end), written in the store's
transactions. `claim` pulls messages (a no-wait pull request: [] comes back at once) and
takes each one in one store transaction unless another claim still holds it; it then
asks JetStream to redeliver the message when the lease ends (``nak`` with that delay),
and the worker that gets it then checks the row again (a renewed lease: ``nak`` for the
rest of it). `renew` moves the lease end in the row only. Attempts are counted in the
row (the delivery count also counts the redeliveries above). A message not yet due is
``nak``ed until its due time.

The contract's ordering (`secumail.pipeline.bus`): `settle` first commits, in one store
transaction, the release of the claim (its row deleted if the token still matches: the
staleness check in the writes' own transaction) and the caller's writes; then publishes
the follow-ups with ``Nats-Msg-Id`` = ``<stream>.<sequence>.<index>`` (a repeat after a
crash, or a stale claim's late settle, is dropped by JetStream's deduplication within
`duplicate_window`); then acknowledges the message (``AckAck``: the stream no longer
holds it when `settle` returns). `retry` republishes the job (a message is immutable: a
new payload or due time is a new message) with its attempts in ``Secumail-Attempts``,
then acknowledges the old one. `publish_claimed` publishes a message that carries its
claim (``Secumail-Claim: <token> <lease end>``), honoured by claimers as long as no row
says otherwise; its holder removes it by sequence (STREAM.MSG.DELETE) since it never
received a delivery to acknowledge.

Admission (`over_bound`) counts the messages on the ``.now`` subjects of the stream (in
hand or waiting): work ready for the stages. It does not use JetStream's ``max_msgs`` +
discard-new (err 10077): that limit counts deferred retries too (a recipient's MX down
would close the door) and would refuse the stages' own follow-ups and retries, not
only new mail. A job published with a delay stays on ``.later`` when it comes due and
then no longer counts towards the bound (a slight under-count of ready work). `wait`
wakes on a plain subscription to ``<stream>.*.now`` (every publish on any worker) and
otherwise polls once a second (jobs coming due, leases running out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from secumail.errors import BusUnavailable, StoreError
from secumail.pipeline.bus import Claimed, Job, Publish, StoreWrites
from secumail.store.database import Database

if TYPE_CHECKING:
    from secumail.pipeline.bus import Bus

NATS_BUS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS bus_claims (
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        token TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        lease_until REAL NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID""",
]

DUE = "Secumail-Due"
ATTEMPTS = "Secumail-Attempts"
BORN_CLAIMED = "Secumail-Claim"
MSG_ID = "Nats-Msg-Id"
BORN = "b"  # token prefix of a claim made by `publish_claimed`
POLL = 1.0
DEPTH_CACHE = 0.2
ACK_WAIT = 30.0  # a pulled message not yet taken or nak'ed (its claimer died) comes back
MAX_ACK_PENDING = 1_000_000  # delayed and claimed jobs are all "ack pending"
FETCH_TIMEOUT = 5.0
DUPLICATE_WINDOW = 3600.0
STREAM_IN_USE = 10058
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

log = logging.getLogger("secumail.bus")


class Malformed(ValueError):
    """A message on the stream that no worker of ours wrote."""


def _number(text: str | None) -> float:
    """A header's finite, non-negative number (0 when absent)."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise Malformed("not a number") from None
    if not math.isfinite(value) or value < 0:
        raise Malformed("not a finite time or count")
    return value


def _job(data: bytes) -> Job:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("body is not JSON") from None
    if not (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and isinstance(body.get("payload"), dict)
    ):
        raise Malformed("body is not a job")
    return Job(body["id"], body["payload"])


def _born_until(text: str | None) -> float | None:
    """The lease end of a claim born with its message (``<token> <lease end>``)."""
    if text is None:
        return None
    parts = text.split(" ")
    if len(parts) != 2:
        raise Malformed("bad claim header")
    return _number(parts[1])


def _name(kind: str, value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(f"{kind} {value!r}: letters, digits, '_' and '-' only")
    return value


def _seq(m: Msg) -> int:
    try:
        return m.metadata.sequence.stream
    except (nats.errors.Error, ValueError, IndexError):  # not a JetStream reply subject
        return 0


@dataclass(frozen=True, slots=True)
class _Offer:
    """A pulled message, checked: what claiming it needs."""

    msg: Msg
    seq: int
    job: Job
    due: float
    attempts: int
    born_until: float | None

    @classmethod
    def of(cls, m: Msg) -> _Offer:
        headers = m.headers or {}
        seq = _seq(m)
        if seq <= 0:
            raise Malformed("no stream sequence")
        return cls(
            m,
            seq,
            _job(m.data),
            _number(headers.get(DUE)),
            int(_number(headers.get(ATTEMPTS))),
            _born_until(headers.get(BORN_CLAIMED)),
        )


class NatsBus:
    """The `Bus` on NATS JetStream, with its claims in the metadata store `db`."""

    def __init__(
        self,
        url: str,
        db: Database,
        *,
        stream: str = "SECUMAIL",
        bound: int,
        lease: float,
        duplicate_window: float = DUPLICATE_WINDOW,
    ) -> None:
        """Not yet connected: the first call connects (`connect` does it at once)."""
        self.url = url
        self.db = db
        self.stream = _name("stream", stream)
        self.bound = bound
        self.lease = lease
        self.duplicate_window = duplicate_window
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._consumers: set[str] = set()
        self._events: dict[str, asyncio.Event] = {}
        self._held: dict[int, Msg] = {}  # deliveries of the jobs this bus claimed
        self._gone: list[int] = []  # ended claims whose messages left the stream
        self._ready = 0
        self._ready_at = -DEPTH_CACHE

    @classmethod
    async def connect(
        cls,
        url: str,
        db: Database,
        *,
        stream: str = "SECUMAIL",
        bound: int,
        lease: float,
        duplicate_window: float = DUPLICATE_WINDOW,
    ) -> NatsBus:
        """A bus connected to `url` (see `_connected`)."""
        bus = cls(
            url, db, stream=stream, bound=bound, lease=lease, duplicate_window=duplicate_window
        )
        await bus._connected()
        return bus

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("NatsBus used before it connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsBus used before it connected")
        return self._js

    async def _connected(self) -> None:
        """Connect (once): create the stream when missing, watch for new jobs."""
        if self._nc is not None and not self._nc.is_closed:
            return
        async with self._connecting:
            if self._nc is not None and not self._nc.is_closed:
                return
            self._nc = self._js = None  # closed (the server was gone too long): connect anew
            try:
                nc = await nats.connect(
                    self.url,
                    name="secumail",
                    connect_timeout=5,
                    # Two tries, then an answer (BusUnavailable): nats-py would otherwise try
                    # for ever here. A connection lost later is tried twice as well, then
                    # closed, and the next call of this bus connects anew.
                    max_reconnect_attempts=1,
                    error_cb=self._connection_trouble,
                )
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                raise BusUnavailable(f"bus.url {self.url}: cannot connect: {exc or type(exc).__name__}") from None
            js = nc.jetstream()
            try:
                await self._ensure_stream(js)
                await nc.subscribe(f"{self.stream}.*.now", cb=self._seen)
            except BaseException as exc:
                await nc.close()
                if isinstance(exc, (OSError, TimeoutError, nats.errors.Error)):
                    raise BusUnavailable(f"bus.url {self.url}: {exc or type(exc).__name__}") from None
                raise
            self._nc, self._js = nc, js

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """The server's absence as Secumail's `BusUnavailable` (callers refuse new work
        with a temporary reply, runners wait and try again)."""
        try:
            yield
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailable(f"bus.url {self.url}: {exc or type(exc).__name__}") from None

    async def _connection_trouble(self, exc: Exception) -> None:
        """nats-py's error callback: one line per trouble, not its traceback every 2 s."""
        log.warning("nats: %s", str(exc) or type(exc).__name__)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=self.duplicate_window,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_IN_USE:  # made by another worker, maybe differently
                raise

    async def _consumer(self, queue: str) -> str:
        if queue not in self._consumers:
            await self.js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=queue,
                    filter_subject=f"{self.stream}.{queue}.*",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ACK_WAIT,
                    deliver_policy=DeliverPolicy.ALL,
                    max_deliver=-1,
                    max_ack_pending=MAX_ACK_PENDING,
                ),
            )
            self._consumers.add(queue)
        return queue

    # -- waking ------------------------------------------------------------------------
    def _event(self, queue: str) -> asyncio.Event:
        ev = self._events.get(queue)
        if ev is None:
            ev = self._events[queue] = asyncio.Event()
        return ev

    async def _seen(self, msg: Msg) -> None:
        """A job published on some worker: wake this bus's consumers of its queue (not
        for one published already claimed)."""
        if msg.headers and BORN_CLAIMED in msg.headers:
            return
        parts = msg.subject.split(".")
        ev = self._events.get(parts[1]) if len(parts) == 3 else None
        if ev is not None:  # a queue this bus claims from
            ev.set()

    async def wait(self, queue: str, timeout: float) -> None:
        with self._reachable():
            await self._wait_now(queue, timeout)

    async def _wait_now(self, queue: str, timeout: float) -> None:
        await self._connected()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event(queue).wait(), min(timeout, POLL))

    # -- publishing --------------------------------------------------------------------
    async def _publish(
        self,
        p: Publish,
        *,
        msg_id: str = "",
        attempts: int = 0,
        born: tuple[str, float] | None = None,
    ) -> int:
        """Put the job on its queue's subject; its stream sequence."""
        await self._connected()
        queue = _name("queue", p.queue)
        headers: dict[str, str] = {}
        if p.delay > 0:
            headers[DUE] = repr(time.time() + p.delay)
        if attempts:
            headers[ATTEMPTS] = str(attempts)
        if born is not None:
            headers[BORN_CLAIMED] = f"{born[0]} {born[1]!r}"
        if msg_id:
            headers[MSG_ID] = msg_id
        body = json.dumps(
            {"id": p.job.message_id, "payload": p.job.payload}, separators=(",", ":")
        ).encode()
        subject = f"{self.stream}.{queue}.{'later' if p.delay > 0 else 'now'}"
        ack = await self.js.publish(subject, body, headers=headers or None)
        if p.delay <= 0 and born is None:
            self._event(queue).set()
        return ack.seq

    async def _write(self, writes: StoreWrites) -> None:
        if writes:

            def op(c: sqlite3.Connection) -> None:
                for fn in writes:
                    fn(c)

            await self.db.run(op)

    async def publish(
        self, queue: str, job: Job, delay: float = 0.0, writes: StoreWrites = ()
    ) -> None:
        await self._write(writes)
        with self._reachable():
            await self._publish(Publish(queue, job, delay))

    async def publish_claimed(self, queue: str, job: Job, writes: StoreWrites = ()) -> Claimed:
        await self._write(writes)
        token = BORN + secrets.token_hex(8)
        with self._reachable():
            seq = await self._publish(Publish(queue, job), born=(token, time.time() + self.lease))
        return Claimed(seq, queue, job, 1, token)

    # -- claiming ----------------------------------------------------------------------
    async def _fetch(self, queue: str, batch: int) -> list[Msg]:
        """Up to `batch` messages the consumer has for us now (a no-wait pull request)."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{queue}", request, reply=inbox
            )
            got: list[Msg] = []
            while len(got) < batch:
                msg = await sub.next_msg(timeout=FETCH_TIMEOUT)
                if msg.headers and "Status" in msg.headers:  # 404 no messages, 408 expired
                    break
                got.append(msg)
            return got
        finally:
            await sub.unsubscribe()

    async def claim(self, queue: str, limit: int) -> list[Claimed]:
        with self._reachable():
            return await self._claim_now(queue, limit)

    async def _claim_now(self, queue: str, limit: int) -> list[Claimed]:
        self._event(queue).clear()
        await self._connected()
        await self._consumer(_name("queue", queue))
        token = secrets.token_hex(8)
        claimed: list[Claimed] = []
        more = True
        while more and len(claimed) < limit:
            want = limit - len(claimed)
            msgs = await self._fetch(queue, want)
            more = len(msgs) == want  # fewer: the consumer had no more to give
            now = time.time()
            due: list[_Offer] = []
            for m in msgs:
                try:
                    offer = _Offer.of(m)
                except Malformed as exc:
                    # Not ours (nothing else may publish on the stream): taken out so
                    # it cannot block the queue. Its sequence only, not its content.
                    log.warning("bus: dropped message %d of %s: %s", _seq(m), queue, exc)
                    await self.nc.publish(m.reply, b"+TERM")
                    continue
                if offer.due > now:
                    await m.nak(delay=offer.due - now)
                else:
                    due.append(offer)
            claimed += await self._take(queue, due, token)
        return claimed

    async def _take(self, queue: str, offers: list[_Offer], token: str) -> list[Claimed]:
        """Claim the messages not held by another claim, in one store transaction."""
        if not offers:
            return []
        lease = self.lease
        gone = self._take_gone()

        def op(c: sqlite3.Connection) -> list[tuple[int, float]]:
            """(attempts, lease end) per offer; attempts 0 when another claim holds it."""
            self._forget(c, gone)
            now = time.time()
            out: list[tuple[int, float]] = []
            for o in offers:
                row = c.execute(
                    "SELECT attempts, lease_until FROM bus_claims WHERE stream = ? AND seq = ?",
                    (self.stream, o.seq),
                ).fetchone()
                if row is not None and row[1] > now:
                    out.append((0, row[1]))
                    continue
                if row is None and o.born_until is not None and o.born_until > now:
                    out.append((0, o.born_until))
                    continue
                prior = row[0] if row is not None else o.attempts + (o.born_until is not None)
                attempts = prior + 1
                c.execute(
                    "INSERT INTO bus_claims (stream, seq, token, attempts, lease_until)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, seq) DO UPDATE SET"
                    " token = excluded.token, attempts = excluded.attempts,"
                    " lease_until = excluded.lease_until",
                    (self.stream, o.seq, token, attempts, now + lease),
                )
                out.append((attempts, now + lease))
            return out

        try:
            taken = await self.db.run(op)
        except BaseException:
            self._gone += gone
            raise
        claimed: list[Claimed] = []
        now = time.time()
        for o, (attempts, until) in zip(offers, taken, strict=True):
            # JetStream brings it back when the lease (ours or the holder's) ends.
            await o.msg.nak(delay=max(until - now, 0.001))
            if attempts:
                self._held[o.seq] = o.msg
                claimed.append(Claimed(o.seq, queue, o.job, attempts, token))
        return claimed

    async def renew(self, claimed: Sequence[Claimed]) -> None:
        if not claimed:
            return
        rows = [(self.stream, c.id, c.token, c.attempts) for c in claimed]

        def op(c: sqlite3.Connection) -> None:
            until = time.time() + self.lease
            c.executemany(
                "UPDATE bus_claims SET lease_until = ? WHERE stream = ? AND seq = ? AND token = ?",
                [(until, s, seq, t) for s, seq, t, _ in rows],
            )
            # A claim born with its message has no row until it is renewed.
            c.executemany(
                "INSERT OR IGNORE INTO bus_claims (stream, seq, token, attempts, lease_until)"
                " VALUES (?, ?, ?, ?, ?)",
                [(s, seq, t, a, until) for s, seq, t, a in rows if t.startswith(BORN)],
            )

        await self.db.run(op)

    # -- ending a claim ----------------------------------------------------------------
    def _release(self, c: sqlite3.Connection, claimed: Claimed) -> bool:
        """End the claim in the store: True when it still held the job. The row stays,
        ended (no token), until the message has left the stream: should this worker die
        before that, the job comes back with its attempts counted on."""
        if c.execute(
            "UPDATE bus_claims SET token = '', lease_until = 0"
            " WHERE stream = ? AND seq = ? AND token = ?",
            (self.stream, claimed.id, claimed.token),
        ).rowcount:
            return True
        if not claimed.token.startswith(BORN):
            return False
        # Born with its message and never renewed: held unless another claim took it.
        return bool(
            c.execute(
                "INSERT OR IGNORE INTO bus_claims (stream, seq, token, attempts, lease_until)"
                " VALUES (?, ?, '', ?, 0)",
                (self.stream, claimed.id, claimed.attempts),
            ).rowcount
        )

    def _take_gone(self) -> list[int]:
        gone, self._gone = self._gone, []
        return gone

    def _forget(self, c: sqlite3.Connection, gone: list[int]) -> None:
        """Delete the ended claims of messages gone from the stream (done in the next
        transaction this bus makes anyway: no commit of its own)."""
        if gone:
            c.executemany(
                "DELETE FROM bus_claims WHERE stream = ? AND seq = ? AND token = ''",
                [(self.stream, seq) for seq in gone],
            )

    async def _remove(self, claimed: Claimed) -> None:
        """Take the job's message out of the stream."""
        msg = self._held.pop(claimed.id, None)
        if msg is not None and msg.reply:
            # AckAck (a request): JetStream answers once the stream no longer holds it.
            # (Msg.ack_sync refuses a message it has seen nak'ed: the nak above was the
            # lease, this is the end of the claim.)
            await self.nc.request(msg.reply, b"+ACK", timeout=FETCH_TIMEOUT)
        else:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_msg(self.stream, claimed.id)
        self._gone.append(claimed.id)

    async def settle(
        self, claimed: Claimed, then: Sequence[Publish], writes: StoreWrites = ()
    ) -> bool:
        gone = self._take_gone()

        def op(c: sqlite3.Connection) -> bool:
            held = self._release(c, claimed)
            for fn in writes:
                fn(c)
            self._forget(c, gone)
            return held

        try:
            held = await self.db.run(op)
        except BaseException:
            self._gone += gone
            raise
        if not held:
            self._held.pop(claimed.id, None)
            return False
        await asyncio.gather(
            *(self._publish(p, msg_id=f"{self.stream}.{claimed.id}.{i}") for i, p in enumerate(then))
        )
        await self._remove(claimed)
        self._ready_at = -DEPTH_CACHE
        return True

    async def retry(
        self, claimed: Claimed, delay: float, payload: dict[str, Any] | None = None
    ) -> bool:
        if not await self.db.run(lambda c: self._release(c, claimed)):
            self._held.pop(claimed.id, None)
            return False
        job = Job(claimed.job.message_id, claimed.job.payload if payload is None else payload)
        await self._publish(
            Publish(claimed.queue, job, delay),
            msg_id=f"{self.stream}.{claimed.id}.retry",
            attempts=claimed.attempts,
        )
        await self._remove(claimed)
        return True

    # -- counting ----------------------------------------------------------------------
    async def _counts(self, subjects: str) -> dict[str, int]:
        with self._reachable():
            return await self._counts_now(subjects)

    async def _counts_now(self, subjects: str) -> dict[str, int]:
        await self._connected()
        info = await self.js.stream_info(self.stream, subjects_filter=subjects)
        counts: dict[str, int] = {}
        for subject, n in (info.state.subjects or {}).items():
            queue = subject.split(".")[1]
            if n:
                counts[queue] = counts.get(queue, 0) + n
        return counts

    async def depths(self) -> dict[str, int]:
        return await self._counts(f"{self.stream}.*.*")

    async def over_bound(self, queue: str) -> bool:
        """Admission control: the jobs on the ``.now`` subjects (ready for the stages,
        claimed or not) at or over the bound? (Counted at most 5×/s.)"""
        if time.monotonic() - self._ready_at > DEPTH_CACHE:
            self._ready = sum((await self._counts(f"{self.stream}.*.now")).values())
            self._ready_at = time.monotonic()
        return self._ready >= self.bound

    async def close(self) -> None:
        """Wake whoever waits and close the connection; the jobs stay in the stream (a
        job this bus held comes back when its lease ends)."""
        for ev in self._events.values():
            ev.set()
        self._held.clear()
        gone = self._take_gone()
        if gone:
            with contextlib.suppress(StoreError):
                await self.db.run(lambda c: self._forget(c, gone))
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


if TYPE_CHECKING:

    def _a_nats_bus_is_a_bus(bus: NatsBus) -> Bus:
        return bus  # mypy: NatsBus implements the Bus Protocol exactly
