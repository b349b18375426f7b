"""SQLite with group commit: many callers, one transaction and one fsync per batch.

Every caller hands a function `fn(conn) -> T` to `run()`. The functions handed in during
one turn of the event loop form a batch: at the end of that turn the batch runs on the
loop's own thread, in one transaction, each function isolated from the others (a failing
one is rolled back alone, see `_attempt`); the COMMIT (WAL, synchronous=FULL: durable when
it returns — the fsync) runs in a committer thread, and then every caller's future is
resolved. Calls made meanwhile form the next batch. Under load this turns hundreds of
small commits into a few large ones; idle, a call costs one commit as usual.

Why the operations run on the loop's thread and not a writer thread: they are Python
functions, so a writer thread needs the GIL for each of them — and for every return from
SQLite — while the event loop holds it; measured under load, a writer thread spent two
thirds of each batch waiting for the GIL (and held the other processes' writes up
meanwhile). Only what blocks without the GIL — the fsync, waiting for another process's
transaction, WAL checkpoints — happens in threads.

Reads do not wait for writes: `read()` runs a point lookup at once on the calling thread's
own read connection (WAL readers never wait for the writer), in one read transaction so it
sees one committed state. Several `secumail serve` processes may share the file: their
batches take turns through a file lock (`<db>.writer`); a process that finds it taken
waits for it in a thread, and wakes as soon as it is free (SQLite's own busy handler
sleeps and polls).

`PRAGMA secure_delete=FAST` zeroes deleted rows in place, so a crypto-shredded message key
does not linger in the file (the WAL still holds it until the next checkpoint, which
`checkpoint()` forces). Pages that become free are not rewritten: the sealed bodies on
them are ciphertext whose key is gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from secumail.errors import ConflictError, StoreError

T = TypeVar("T")
MAX_BATCH = 512
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints (at most)

log = logging.getLogger("secumail.store")

# A write to run on the store's connection, batched with others into one transaction.
Op = Callable[[sqlite3.Connection], object]

Pending = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any] | _Box"]


class Database:
    """A SQLite file shared by the store, the spool and the embedded bus of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._writer_lock: WriterLock | None = None
        self._use = threading.Lock()  # one batch at a time on the write connection
        self._pending: list[Pending] = []
        self._pending_lock = threading.Lock()  # a waiting thread may take the batch
        self._flush_scheduled = False
        self._busy = False  # a batch is running or being committed (or waits for the lock)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="secumail-commit")
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._checkpointing = threading.Lock()
        self._checkpointed_at = 0.0
        self.batches = 0
        self.operations = 0

    def open(self, schema: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer_lock = WriterLock(self.path.with_name(self.path.name + ".writer"))
            conn = self._connect()
            with self._writer_lock, conn:
                for statement in schema:
                    _apply(conn, statement)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._conn = conn

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no batch is running or waiting (before `close` on the loop's thread:
        a batch that waits for the file lock needs this loop to finish)."""
        deadline = time.monotonic() + timeout
        # Polled: shutdown only, and an Event would cost something on every batch.
        while (self._busy or self._pending) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Commit what is still pending, then close (callable from any thread; on the
        loop's own thread after `drain`)."""
        if self._conn is None:
            return
        self._flush()
        with self._use:
            self._conn.close()
            self._conn = None
        self._committer.shutdown()
        assert self._writer_lock is not None
        self._writer_lock.close()
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        self._readers = threading.local()

    # -- writes ------------------------------------------------------------------------
    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group commit (at the end of this loop turn); durable on return."""
        if self._conn is None:
            raise StoreError(f"database {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_soon)
        return await future

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for command-line tools and threads without an event loop."""
        if self._conn is None:
            raise StoreError(f"database {self.path} is closed")
        box: list[tuple[Any, BaseException | None]] = []
        self._hold()
        try:
            self._commit(self._conn, [(fn, _Box(box))])
        finally:
            self._let_go()
        value, error = box[0]
        if error is not None:
            raise error
        result: T = value
        return result

    def _flush_soon(self) -> None:
        """End of a loop turn: start the pending batch now, or — when another batch is
        being committed, or another process holds the file lock — once that is done."""
        self._flush_scheduled = False
        if not self._pending or self._busy:
            return
        self._busy = True
        if self._try_hold():
            self._start_batch()
        else:
            asyncio.get_running_loop().create_task(self._start_when_free())

    async def _start_when_free(self) -> None:
        try:
            await asyncio.to_thread(self._hold)
        except BaseException:
            self._busy = False
            raise
        self._start_batch()

    def _start_batch(self) -> None:
        """On the loop, holding the connection and the file lock: run the operations of
        the batch in a transaction, then commit it in the committer thread (the fsync
        must not stop the loop)."""
        conn = self._conn
        batch = self._take_batch()
        if conn is None or not batch:
            self._let_go()
            self._busy = False
            return
        try:
            results = self._execute(conn, batch, commit=False)
        except sqlite3.Error as exc:
            try:
                _fail(conn, batch, exc)
            finally:
                self._let_go()
                self._busy = False
            return
        done = asyncio.get_running_loop().run_in_executor(self._committer, self._commit_and_let_go)
        done.add_done_callback(lambda f: self._batch_committed(batch, results, f))

    def _commit_and_let_go(self) -> None:
        """The committer thread: COMMIT (the fsync), then free the lock for the next batch,
        of this process or another."""
        assert self._conn is not None
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._let_go()

    def _batch_committed(
        self,
        batch: list[Pending],
        results: list[tuple[Any, BaseException | None]],
        done: asyncio.Future[None],
    ) -> None:
        self._busy = False
        error = done.exception()
        if error is not None:
            _fail(None, batch, error)
        else:
            self._done(batch, results)
        if self._pending:
            self._flush_soon()

    def _try_hold(self) -> bool:
        assert self._writer_lock is not None
        if not self._use.acquire(blocking=False):
            return False
        if self._writer_lock.try_acquire():
            return True
        self._use.release()
        return False

    def _hold(self) -> None:
        assert self._writer_lock is not None
        self._use.acquire()
        try:
            self._writer_lock.acquire()
        except BaseException:
            self._use.release()
            raise

    def _let_go(self) -> None:
        assert self._writer_lock is not None
        self._writer_lock.release()
        self._use.release()

    def _flush(self) -> None:
        """Commit everything pending, blocking (`close`)."""
        if self._conn is None:
            return
        self._hold()
        try:
            while self._conn is not None and (batch := self._take_batch()):
                self._commit(self._conn, batch)
        finally:
            self._let_go()

    def _take_batch(self) -> list[Pending]:
        with self._pending_lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        return batch

    def _commit(self, conn: sqlite3.Connection, batch: list[Pending]) -> None:
        """All of `batch` in one transaction, committed here (blocking)."""
        try:
            results = self._execute(conn, batch, commit=True)
        except sqlite3.Error as exc:
            _fail(conn, batch, exc)
            return
        self._done(batch, results)

    def _execute(
        self, conn: sqlite3.Connection, batch: list[Pending], *, commit: bool
    ) -> list[tuple[Any, BaseException | None]]:
        """Run `batch` in one transaction. The common case runs the operations plainly;
        when one of them fails, the batch is rolled back and run again with a SAVEPOINT
        around each operation, so only the failing caller gets its error."""
        results = self._attempt(conn, batch, isolate=False, commit=commit)
        if results is None:
            results = self._attempt(conn, batch, isolate=True, commit=commit)
        assert results is not None
        return results

    def _done(self, batch: list[Pending], results: list[tuple[Any, BaseException | None]]) -> None:
        """A committed batch: count it, answer its callers."""
        self.batches += 1
        self.operations += len(batch)
        self._checkpoint_soon()
        for (_fn, future), (value, error) in zip(batch, results, strict=True):
            _resolve(future, value, error)

    @staticmethod
    def _attempt(
        conn: sqlite3.Connection, batch: list[Pending], *, isolate: bool, commit: bool
    ) -> list[tuple[Any, BaseException | None]] | None:
        """Run the batch in a transaction (and commit it, with `commit`); None (rolled
        back) when an operation failed and `isolate` is off."""
        results: list[tuple[Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, _future in batch:
            if isolate:
                conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:  # noqa: BLE001 - handed to that caller, not swallowed
                if not isolate:
                    conn.execute("ROLLBACK")
                    return None
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((None, _translate(exc)))
            else:
                if isolate:
                    conn.execute("RELEASE op")
                results.append((value, None))
        if commit:
            conn.execute("COMMIT")
        return results

    # -- reads -------------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the read-only `fn` now, on this thread's read connection, in one snapshot:
        no commit, no waiting for one. It runs on the caller's thread, as `run`'s batches
        do, so keep it to what an index answers."""
        return self.read_sync(fn)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError(f"database {self.path} is closed")
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = self._connect_reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=FAST")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        # Checkpoints run in a thread of their own (`_checkpoint_soon`), not inside a
        # commit on the event loop.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=2000")
        self._reader_conns.append(conn)
        return conn

    def _checkpoint_soon(self) -> None:
        """At most once a second, copy the WAL back into the database file in a thread
        (PASSIVE: it never waits for, nor holds up, writers or readers)."""
        now = time.monotonic()
        if now - self._checkpointed_at < CHECKPOINT_EVERY or self._checkpointing.locked():
            return
        self._checkpointed_at = now
        threading.Thread(target=self._checkpoint_passive, name="secumail-checkpoint").start()

    def _checkpoint_passive(self) -> None:
        with self._checkpointing:
            try:
                self._checkpoint("PASSIVE")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)

    async def checkpoint(self, attempts: int = 50) -> bool:
        """Fold the WAL into the database and truncate it, so deleted secrets leave the
        log file too. Another process's checkpoint running at the same moment makes one
        fail at once (SQLITE_BUSY): tried again, `attempts` times 0.1 s apart. True when
        the WAL was emptied."""
        await self.run(lambda c: None)
        for _ in range(attempts):
            if await asyncio.to_thread(self._checkpoint, "TRUNCATE"):
                return True
            await asyncio.sleep(0.1)
        log.warning("could not truncate the WAL of %s: it is busy", self.path)
        return False

    def _checkpoint(self, mode: str) -> bool:
        """True when every frame was checkpointed (not busy)."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            busy = int(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0])
        finally:
            conn.close()
        return busy == 0


def _fail(conn: sqlite3.Connection | None, batch: list[Pending], exc: BaseException) -> None:
    """The batch did not commit: roll back what is open, and every caller gets the error."""
    if conn is not None and conn.in_transaction:
        conn.execute("ROLLBACK")
    error = StoreError(f"database commit failed: {exc}")
    for _fn, future in batch:
        _resolve(future, None, error)


class _Box:
    """Stands in for a future where `run_sync` collects its one result."""

    def __init__(self, into: list[tuple[Any, BaseException | None]]) -> None:
        self.into = into


def _resolve(future: Any, value: Any, error: BaseException | None) -> None:
    if isinstance(future, _Box):
        future.into.append((value, error))
        return
    loop = future.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _settle(future, value, error)
    else:
        loop.call_soon_threadsafe(_settle, future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the operation ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class WriterLock:
    """An exclusive lock on a file, held for one transaction: processes sharing the
    database take turns, and a waiting writer wakes when the lock is free."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        os.close(self._fd)


def _apply(conn: sqlite3.Connection, statement: str) -> None:
    """Run one schema statement; `ALTER TABLE … ADD COLUMN` is idempotent too."""
    try:
        conn.execute(statement)
    except sqlite3.OperationalError as exc:
        if not (
            statement.lstrip().upper().startswith("ALTER TABLE") and "duplicate column" in str(exc)
        ):
            raise


def _translate(exc: Exception) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(str(exc))
    if isinstance(exc, sqlite3.Error):
        return StoreError(str(exc))
    return exc
