"""The message event log: one row per thing that happened to a message or a recipient.

The one place that writes the `events` table; the metadata store's transactions call it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

# (message_id, recipient or None for the whole message, at, kind, detail as JSON)
EventRow = tuple[str, str | None, float, str, str]

_INSERT = "INSERT INTO events (message_id, recipient, at, kind, detail) VALUES (?, ?, ?, ?, ?)"


def event_row(
    message_id: str, recipient: str | None, at: float, kind: str, detail: dict[str, Any]
) -> EventRow:
    """The row for one event; `detail` is encoded here, so a bad one fails its caller."""
    return (message_id, recipient, at, kind, json.dumps(detail))


def insert_event(c: sqlite3.Connection, row: EventRow) -> None:
    """Add one event inside the caller's transaction."""
    c.execute(_INSERT, row)
