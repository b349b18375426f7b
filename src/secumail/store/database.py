"""SQLite with group commit: one writer thread, many callers, one fsync per batch.

Every caller hands a function `fn(conn) -> T` to `run()`; the writer thread takes all
pending functions, runs each inside its own SAVEPOINT (so one failure does not undo the
others) in one transaction, commits once (WAL, synchronous=FULL: the commit is durable
when it returns) and then resolves every caller's future. Under load this turns hundreds
of small commits into a few large ones; idle, a call costs one commit as usual.

`PRAGMA secure_delete` overwrites deleted content, so a crypto-shredded message key does
not linger in free pages (the WAL still holds it until the next checkpoint, which
`checkpoint()` forces).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from secumail.errors import ConflictError, StoreError

T = TypeVar("T")
_STOP = object()
MAX_BATCH = 512


class Database:
    """A SQLite file shared by the store, the spool and the embedded bus of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.batches = 0
        self.operations = 0

    def open(self, schema: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._writer, args=(schema,), name="secumail-db", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise StoreError(f"cannot open {self.path}: {self._open_error}")

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the writer thread within the next group commit; durable on return."""
        if self._thread is None:
            raise StoreError(f"database {self.path} is closed")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for command-line tools."""
        if self._thread is None:
            raise StoreError(f"database {self.path} is closed")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _writer(self, schema: list[str]) -> None:
        try:
            conn = self._connect()
            with conn:
                for statement in schema:
                    _apply(conn, statement)
        except sqlite3.Error as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Callable, Future]]) -> None:
        """All of `batch` in one transaction. The common case runs the operations plainly;
        when one of them fails, the batch is rolled back and run again with a SAVEPOINT
        around each operation, so only the failing caller gets its error."""
        results: list[tuple[Future, Any, BaseException | None]] | None = None
        try:
            results = self._attempt(conn, batch, isolate=False)
            if results is None:
                results = self._attempt(conn, batch, isolate=True)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StoreError(f"database commit failed: {exc}")
            for _fn, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        assert results is not None
        self.batches += 1
        self.operations += len(batch)
        for future, value, error in results:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _attempt(
        self, conn: sqlite3.Connection, batch: list[tuple[Callable, Future]], *, isolate: bool
    ) -> list[tuple[Future, Any, BaseException | None]] | None:
        """Run and commit the batch; None (rolled back) when an operation failed and
        `isolate` is off."""
        results: list[tuple[Future, Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, future in batch:
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
                results.append((future, None, _translate(exc)))
            else:
                if isolate:
                    conn.execute("RELEASE op")
                results.append((future, value, None))
        conn.execute("COMMIT")
        return results

    async def checkpoint(self) -> None:
        """Fold the WAL into the database so deleted secrets leave the log file too."""
        await self.run(lambda c: None)
        await asyncio.to_thread(self._checkpoint)

    def _checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


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
