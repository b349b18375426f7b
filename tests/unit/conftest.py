"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from secumail.pipeline.embedded_bus import BUS_SCHEMA
from secumail.store.database import Database


@pytest.fixture
def bus_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh database holding the embedded bus's tables."""
    database = Database(tmp_path / "bus.sqlite")
    database.open(BUS_SCHEMA)
    yield database
    database.close()
