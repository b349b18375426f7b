"""The embedded bus: durable queues in the SQLite file, for the one-process deployment.

Rows in `jobs` are the queue entries. Claiming sets a lease; settling deletes the row and
inserts its successors in the same transaction (group-committed with everything else).
Consumers in this process are woken at once by publishes; others poll once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time

from secumail.pipeline.bus import Claimed, Job, Publish
from secumail.store.database import Database, Op

BUS_SCHEMA = [
    # AUTOINCREMENT: an id is never reused, so nothing said about a finished job can
    # touch the job that follows it.
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}',
        available_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(queue, available_at)",
    # The claim's token: renewing, settling or retrying a job needs the token of the claim
    # that holds it (a worker whose lease ran out cannot touch a job claimed again since).
    "ALTER TABLE jobs ADD COLUMN token TEXT NOT NULL DEFAULT ''",
]

POLL = 1.0
DEPTH_CACHE = 0.2


def _insert(
    c: sqlite3.Connection, p: Publish, now: float, lease_until: float = 0.0, token: str = ""
) -> int:
    """The queue entry; with `token`, already claimed (leased until `lease_until`, its
    first attempt). Its id."""
    cur = c.execute(
        "INSERT INTO jobs (queue, message_id, payload, available_at, lease_until, attempts, token)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            p.queue,
            p.job.message_id,
            p.job.encode(),
            now + p.delay,
            lease_until,
            int(bool(token)),
            token,
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


class EmbeddedBus:
    def __init__(
        self,
        db: Database,
        *,
        bound: int,
        lease: float,
        max_wait: float = 0.0,
        queues: list[str] | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.queues = list(queues or [])
        self.db = db
        self.bound = bound
        self.lease = lease
        self._events: dict[str, asyncio.Event] = {}
        self._depths: dict[str, int] = {}
        self._ready = 0
        self._oldest_wait = 0.0
        self._depths_at = 0.0

    def _event(self, queue: str) -> asyncio.Event:
        ev = self._events.get(queue)
        if ev is None:
            ev = self._events[queue] = asyncio.Event()
        return ev

    def announce(self, publishes: list[Publish], *, wake: bool = True) -> None:
        """Count new jobs (ready work counts jobs in hand too) and wake their consumers;
        `wake` off for jobs already claimed by this process."""
        for p in publishes:
            self._depths[p.queue] = self._depths.get(p.queue, 0) + 1
            if p.delay <= 0:
                self._ready += 1
                if wake:
                    self._event(p.queue).set()

    def publish_op(self, publish: Publish, also: list[Op], claim: str = "") -> Op:
        """One transaction: the caller's writes, then the queue entry; the op returns its
        id. With `claim` (a token) the job is born claimed by this process under that
        token (a local consumer takes it straight from the publisher, with no claim round
        trip); should the process die, the lease runs out and any worker claims it."""

        def op(c: sqlite3.Connection) -> int:
            for fn in also:
                fn(c)
            now = time.time()
            return _insert(c, publish, now, now + self.lease if claim else 0.0, claim)

        return op

    async def publish(self, queue: str, job: Job, delay: float = 0.0, also: list[Op] = ()) -> None:
        p = Publish(queue, job, delay)
        await self.db.run(self.publish_op(p, list(also)))
        self.announce([p])

    async def claim(self, queue: str, limit: int) -> list[Claimed]:
        token = secrets.token_hex(8)

        def op(c: sqlite3.Connection) -> list[sqlite3.Row]:
            now = time.time()
            return c.execute(
                "UPDATE jobs SET lease_until = ?, attempts = attempts + 1, token = ? WHERE id IN ("
                " SELECT id FROM jobs WHERE queue = ? AND available_at <= ? AND lease_until <= ?"
                " ORDER BY available_at, id LIMIT ?)"
                " RETURNING id, message_id, payload, attempts",
                (now + self.lease, token, queue, now, now, limit),
            ).fetchall()

        self._event(queue).clear()
        rows = await self.db.run(op)
        return [
            Claimed(
                r["id"], queue, Job(r["message_id"], json.loads(r["payload"])), r["attempts"], token
            )
            for r in sorted(rows, key=lambda r: r["id"])
        ]

    async def next_due(self, queue: str) -> float | None:
        """When the next unclaimed job of `queue` is due (walks the index from the front;
        jobs in workers' hands come back through the regular poll)."""

        def op(c: sqlite3.Connection) -> float | None:
            row = c.execute(
                "SELECT available_at FROM jobs WHERE queue = ? AND lease_until <= ?"
                " ORDER BY available_at LIMIT 1",
                (queue, time.time()),
            ).fetchone()
            return None if row is None else row[0]

        return await self.db.read(op)

    async def wait(self, queue: str, timeout: float) -> None:
        due = await self.next_due(queue)
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.time()))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event(queue).wait(), timeout)

    async def settle(self, claimed: Claimed, then: list[Publish], also: list[Op] = ()) -> bool:
        """Remove the job and publish what follows, in one step; False (nothing done) when
        this claim no longer holds the job (its lease ran out and it was claimed again)."""

        def op(c: sqlite3.Connection) -> bool:
            now = time.time()
            if not c.execute(
                "DELETE FROM jobs WHERE id = ? AND token = ?", (claimed.id, claimed.token)
            ).rowcount:
                return False
            for fn in also:
                fn(c)
            for p in then:
                _insert(c, p, now)
            return True

        if not await self.db.run(op):
            return False
        self._depths[claimed.queue] = max(0, self._depths.get(claimed.queue, 1) - 1)
        self._ready = max(0, self._ready - 1)
        self.announce(then)
        return True

    async def retry(self, claimed: Claimed, delay: float, payload: dict | None = None) -> None:
        def op(c: sqlite3.Connection) -> None:
            if payload is None:
                c.execute(
                    "UPDATE jobs SET available_at = ?, lease_until = 0 WHERE id = ? AND token = ?",
                    (time.time() + delay, claimed.id, claimed.token),
                )
            else:
                c.execute(
                    "UPDATE jobs SET available_at = ?, lease_until = 0, payload = ? WHERE id = ? AND token = ?",
                    (time.time() + delay, json.dumps(payload), claimed.id, claimed.token),
                )

        await self.db.run(op)
        if delay <= 0:
            self._event(claimed.queue).set()

    async def renew(self, claimed: list[Claimed]) -> None:
        if not claimed:
            return
        held = [(c.id, c.token) for c in claimed]

        def op(c: sqlite3.Connection) -> None:
            until = time.time() + self.lease
            c.executemany(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND token = ?",
                [(until, i, t) for i, t in held],
            )

        await self.db.run(op)

    async def depths(self) -> dict[str, int]:
        """Jobs per queue; also counts the work that is ready now (not waiting to retry)."""
        now = time.time()
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT queue, COUNT(*), TOTAL(available_at <= ?),"
                " MIN(CASE WHEN available_at <= ? AND lease_until <= ? THEN available_at END)"
                " FROM jobs GROUP BY queue",
                (now, now, now),
            ).fetchall()
        )
        self._depths = {r[0]: r[1] for r in rows}
        self._ready = int(sum(r[2] for r in rows))
        waiting_since = [r[3] for r in rows if r[3] is not None]
        self._oldest_wait = now - min(waiting_since) if waiting_since else 0.0
        self._depths_at = time.monotonic()
        return dict(self._depths)

    async def _ready_counts(self) -> None:
        """Ready work and the longest wait, by index range per stage queue: the cost does
        not grow with the retries waiting further down the queues."""
        now = time.time()
        queues = self.queues or list(self._depths)

        def op(c: sqlite3.Connection) -> tuple[int, float | None]:
            ready, oldest = 0, None
            for q in queues:
                n, first = c.execute(
                    "SELECT COUNT(*), MIN(CASE WHEN lease_until <= ? THEN available_at END)"
                    " FROM jobs WHERE queue = ? AND available_at <= ?",
                    (now, q, now),
                ).fetchone()
                ready += n
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
            return ready, oldest

        self._ready, oldest = await self.db.read(op)
        self._oldest_wait = now - oldest if oldest is not None else 0.0
        self._depths_at = time.monotonic()

    async def over_bound(self, queue: str) -> bool:
        """Admission control for the intake (`queue`): is the work ready for the stages —
        in every queue, not counting deferred retries — at or over the bound? Bounding
        what is in flight bounds how long an accepted message waits under overload, while
        a long queue of retries (a recipient's MX down) does not close the door.
        (Counts refreshed 5×/s.)"""
        if time.monotonic() - self._depths_at > DEPTH_CACHE:
            await self._ready_counts()
        # Also by time: a job that has waited longer than max_wait for a worker means
        # the stages are behind; refusing now keeps accepted messages' delay bounded.
        return self._ready >= self.bound or (
            self.max_wait > 0 and self._oldest_wait > self.max_wait
        )
