"""SQLite with group commit: many callers, one transaction and one fsync per batch,
each caller isolated in its own SAVEPOINT (SQLite "SAVEPOINT" semantics)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from secumail.errors import ConflictError, StoreError
from secumail.store.database import Database, WriterLock

SCHEMA = ["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "db" / "test.sqlite")
    database.open(SCHEMA)
    yield database
    database.close()


def insert(k: str, v: int = 0) -> Callable[[sqlite3.Connection], None]:
    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (?, ?)", (k, v))

    return op


def keys(c: sqlite3.Connection) -> list[str]:
    return [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")]


@contextlib.contextmanager
def another_writer(db: Database) -> Iterator[None]:
    """Hold the database's writer lock as another process would (flock on its own open
    file), so that everything queued meanwhile waits and then forms one batch."""
    lock = WriterLock(db.path.with_name(db.path.name + ".writer"))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
        lock.close()


def test_run_returns_the_value(db: Database) -> None:
    async def main() -> list[str]:
        await db.run(insert("a", 1))
        return await db.run(keys)

    assert asyncio.run(main()) == ["a"]
    assert db.run_sync(lambda c: c.execute("SELECT v FROM t").fetchone()[0]) == 1


def test_concurrent_calls_are_group_committed(db: Database) -> None:
    async def main() -> None:
        await asyncio.gather(*(db.run(insert(f"k{i:03}", i)) for i in range(200)))

    asyncio.run(main())
    assert db.operations == 200
    assert db.batches == 1  # all handed in during one turn of the loop: one commit
    assert db.run_sync(keys) == [f"k{i:03}" for i in range(200)]


def test_calls_made_while_another_process_writes_wait_and_share_one_commit(
    db: Database,
) -> None:
    async def main() -> None:
        with another_writer(db):
            first = asyncio.ensure_future(db.run(insert("a", 1)))
            await asyncio.sleep(0.05)
            assert not first.done(), "must wait for the other process's transaction"
            rest = [asyncio.ensure_future(db.run(insert(f"k{i:03}", i))) for i in range(50)]
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in rest)
        await asyncio.wait_for(asyncio.gather(first, *rest), 5)

    asyncio.run(main())
    assert db.operations == 51
    assert db.batches == 1  # when the lock is free, everything that waited: one commit
    assert len(db.run_sync(keys)) == 51


def test_many_concurrent_calls_take_fewer_commits(db: Database) -> None:
    async def main() -> None:
        await asyncio.gather(*(db.run(insert(f"k{i}")) for i in range(200)))

    asyncio.run(main())
    assert db.operations == 200
    assert db.batches < db.operations
    assert len(db.run_sync(keys)) == 200


def test_a_failing_operation_does_not_undo_the_others(db: Database) -> None:
    def insert_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('b', 2)")
        raise ValueError("boom")

    def bad_sql(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO nosuchtable VALUES (1)")

    async def main() -> list[object]:
        await db.run(insert("a"))
        return await asyncio.gather(
            *(
                db.run(op)
                for op in (insert("c"), insert_then_fail, insert("a"), bad_sql, insert("d"))
            ),
            return_exceptions=True,
        )

    batches_before = db.batches
    ok_c, failed, duplicate, bad, ok_d = asyncio.run(main())
    assert db.batches - batches_before == 2  # "a", then all five together
    assert ok_c is None and ok_d is None
    assert isinstance(failed, ValueError) and str(failed) == "boom"  # the caller's own error
    assert isinstance(duplicate, ConflictError)  # sqlite3.IntegrityError translated
    assert isinstance(bad, StoreError)  # other sqlite3 errors translated
    # "b" was rolled back with its failing operation; the rest of the batch is committed.
    assert db.run_sync(keys) == ["a", "c", "d"]


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite"
    first = Database(path)
    first.open(SCHEMA)

    async def write() -> None:
        await asyncio.gather(*(first.run(insert(f"k{i}", i)) for i in range(50)))

    asyncio.run(write())
    first.close()

    second = Database(path)
    second.open(SCHEMA)  # IF NOT EXISTS: reopening keeps the data
    try:
        count, total = second.run_sync(
            lambda c: tuple(c.execute("SELECT COUNT(*), SUM(v) FROM t").fetchone())
        )
        assert (count, total) == (50, sum(range(50)))
    finally:
        second.close()


def test_operations_queued_before_close_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "close.sqlite"
    db = Database(path)
    db.open(SCHEMA)
    futures = []

    async def main() -> None:
        futures.extend(asyncio.create_task(db.run(insert(f"k{i}"))) for i in range(20))
        await asyncio.sleep(0)
        await asyncio.to_thread(db.close)
        await asyncio.gather(*futures)

    asyncio.run(main())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 20
    finally:
        conn.close()


def test_invalid_schema_is_a_store_error(tmp_path: Path) -> None:
    db = Database(tmp_path / "bad.sqlite")
    with pytest.raises(StoreError, match="cannot open"):
        db.open(["CREATE TABLE ("])


def test_reads_see_committed_state_and_do_not_wait_for_writes(db: Database) -> None:
    async def main() -> None:
        await db.run(insert("a", 1))
        with another_writer(db):
            pending = asyncio.ensure_future(db.run(insert("b", 2)))
            await asyncio.sleep(0.05)
            # The write waits for the other process; a read does not, and sees only what
            # is committed.
            assert await asyncio.wait_for(db.read(keys), 1) == ["a"]
            assert not pending.done()
        await asyncio.wait_for(pending, 5)
        assert await db.read(keys) == ["a", "b"], "durable on return, visible at once"

    asyncio.run(main())


def test_a_closed_database_refuses_reads_and_writes(tmp_path: Path) -> None:
    db = Database(tmp_path / "closed.sqlite")
    db.open(SCHEMA)
    db.close()
    with pytest.raises(StoreError, match="closed"):
        db.read_sync(keys)
    with pytest.raises(StoreError, match="closed"):
        asyncio.run(db.run(insert("a")))


def test_close_after_drain_while_another_process_writes_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "drain.sqlite"
    db = Database(path)
    db.open(SCHEMA)

    async def main() -> None:
        lock = WriterLock(path.with_name(path.name + ".writer"))
        lock.acquire()
        calls = [asyncio.ensure_future(db.run(insert(f"k{i}"))) for i in range(5)]
        await asyncio.sleep(0.05)  # the batch now waits for the lock in a thread
        asyncio.get_running_loop().call_later(0.2, lambda: (lock.release(), lock.close()))
        await db.drain()
        db.close()  # on the loop's thread: must not wait for the loop
        assert all(c.done() for c in calls)

    asyncio.run(asyncio.wait_for(main(), 10))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 5
    finally:
        conn.close()
