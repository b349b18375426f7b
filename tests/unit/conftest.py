"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from secumail.pipeline.embedded_bus import BUS_SCHEMA
from secumail.spool.body_store import SPOOL_SCHEMA
from secumail.store.database import Database
from secumail.store.schema import SCHEMA


@pytest.fixture
def bus_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh database holding the embedded bus's tables."""
    database = Database(tmp_path / "bus.sqlite")
    database.open(BUS_SCHEMA)
    yield database
    database.close()


@pytest.fixture
def gateway_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh database with every table of the gateway (store, spool, embedded bus)."""
    database = Database(tmp_path / "gw.sqlite")
    database.open(SCHEMA + SPOOL_SCHEMA + BUS_SCHEMA)
    yield database
    database.close()
