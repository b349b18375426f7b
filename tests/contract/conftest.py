"""The buses under contract test: every implementation of `secumail.pipeline.bus.Bus`.

A test gets a `BusWorld`: the storage of one bus implementation (its queues and the store
its writes go to), from which it makes as many buses as it needs — each one a worker
(a process, in production) on that shared storage — and store writes it can look for
afterwards. To put a new bus under the contract, add a world for it to `WORLDS`.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from secumail.pipeline.bus import Bus
from secumail.pipeline.embedded_bus import BUS_SCHEMA, EmbeddedBus
from secumail.pipeline.nats_bus import NATS_BUS_SCHEMA, NatsBus
from secumail.store.database import Database
from tests.harness.nats import NatsServer

LONG = 3600.0  # a lease or delay that no test outlives

Write = Callable[[sqlite3.Connection], object]


class BusWorld(Protocol):
    async def bus(self, *, lease: float = LONG, bound: int = 100) -> Bus:
        """A new worker's bus on this world's storage, with claims leased for `lease`
        seconds and the intake refused at `bound` jobs ready."""
        ...

    def mark(self, name: str) -> Write:
        """A store write that records `name` (for the writes passed to the bus)."""
        ...

    async def marked(self) -> list[str]:
        """The names recorded by marks that were committed, in order."""
        ...

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run `main` in an event loop, then close the buses it made."""
        ...

    def close(self) -> None:
        """Release the storage (after the test)."""
        ...


MARKS_SCHEMA = ["CREATE TABLE IF NOT EXISTS contract_marks (n INTEGER PRIMARY KEY, name TEXT)"]


class EmbeddedWorld:
    """The embedded bus: queues and store in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        self.db.open(BUS_SCHEMA + MARKS_SCHEMA)
        self._buses: list[Bus] = []

    async def bus(self, *, lease: float = LONG, bound: int = 100) -> Bus:
        made = EmbeddedBus(self.db, bound=bound, lease=lease)
        self._buses.append(made)
        return made

    def mark(self, name: str) -> Write:
        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO contract_marks (name) VALUES (?)", (name,))

        return op

    async def marked(self) -> list[str]:
        def names(c: sqlite3.Connection) -> list[str]:
            return [str(r[0]) for r in c.execute("SELECT name FROM contract_marks ORDER BY n")]

        return await self.db.read(names)

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        async def whole() -> None:
            try:
                await main()
            finally:
                for made in self._buses:
                    await made.close()
                self._buses.clear()
                await self.db.drain()

        asyncio.run(whole())

    def close(self) -> None:
        self.db.close()


class NatsWorld(EmbeddedWorld):
    """The NATS JetStream bus: queues in a stream of this session's own nats-server (a
    stream of its own per test), claims and store writes in a SQLite file."""

    server: NatsServer | None = None  # one per test session, started by the first world

    def __init__(self, path: Path) -> None:
        if NatsWorld.server is None:
            NatsWorld.server = NatsServer().start()
        self.url = NatsWorld.server.url
        self.stream = "CONTRACT_" + secrets.token_hex(6)
        self.db = Database(path)
        self.db.open(NATS_BUS_SCHEMA + MARKS_SCHEMA)
        self._buses = []

    async def bus(self, *, lease: float = LONG, bound: int = 100) -> Bus:
        made = await NatsBus.connect(
            self.url, self.db, stream=self.stream, bound=bound, lease=lease
        )
        self._buses.append(made)
        return made


WORLDS: dict[str, Callable[[Path], BusWorld]] = {
    "embedded": EmbeddedWorld,
    "nats": NatsWorld,
}


@pytest.fixture(scope="session", autouse=True)
def _stop_nats_server() -> Iterator[None]:
    """Stop the NATS server a world started, at the end of the session."""
    yield
    if NatsWorld.server is not None:
        NatsWorld.server.stop()
        NatsWorld.server = None


@pytest.fixture(params=sorted(WORLDS))
def bus_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusWorld]:
    """The storage of one bus implementation, each in turn; it makes the buses."""
    world = WORLDS[request.param](tmp_path / "bus.sqlite")
    yield world
    world.close()
