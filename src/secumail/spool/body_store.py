"""Sealed bodies and wrapped keys in the embedded database.

Bodies sit in the same SQLite file as the metadata so the intake's group commit makes
body, metadata and queue entry durable with one fsync. Destroying a message deletes its
wrapped key and its sealed body (secure_delete overwrites the pages): without the key
any copy of the ciphertext that survives (backup, WAL) is noise.
"""

from __future__ import annotations

import sqlite3

from secumail.errors import SpoolError
from secumail.spool import sealing
from secumail.store.database import Database, Op

SPOOL_SCHEMA = [
    # Header fields the sign stage added (DKIM-Signature, Date, Message-ID): prepended to
    # the body when read. Signatures and identifiers, not content; gone with the message.
    "CREATE TABLE IF NOT EXISTS spool_prefixes (message_id TEXT PRIMARY KEY, prefix BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spool_bodies (message_id TEXT PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spool_keys (message_id TEXT PRIMARY KEY, wrapped_key BLOB NOT NULL)",
]


class BodyStore:
    def __init__(self, db: Database, master_key: bytes) -> None:
        self.db = db
        self._master = master_key

    def put_op(self, message_id: str, body: bytes) -> Op:
        """Seal `body` now (in the caller's thread) and return the write for the batch."""
        key = sealing.new_data_key()
        sealed = sealing.seal(key, message_id, body)
        wrapped = sealing.wrap_key(self._master, message_id, key)

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO spool_keys VALUES (?, ?)", (message_id, wrapped))
            c.execute("INSERT INTO spool_bodies VALUES (?, ?)", (message_id, sealed))

        return op

    def replace_op(self, message_id: str, body: bytes) -> Op:
        """A changed body (signed) under a fresh data key; the old key is overwritten."""
        key = sealing.new_data_key()
        sealed = sealing.seal(key, message_id, body)
        wrapped = sealing.wrap_key(self._master, message_id, key)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE spool_keys SET wrapped_key = ? WHERE message_id = ?", (wrapped, message_id)
            )
            c.execute("UPDATE spool_bodies SET body = ? WHERE message_id = ?", (sealed, message_id))

        return op

    async def get(self, message_id: str) -> bytes:
        """The message as it is to be delivered: added header fields, then the body."""

        def op(c: sqlite3.Connection) -> tuple[bytes, bytes, bytes] | None:
            k = c.execute(
                "SELECT wrapped_key FROM spool_keys WHERE message_id = ?", (message_id,)
            ).fetchone()
            b = c.execute(
                "SELECT body FROM spool_bodies WHERE message_id = ?", (message_id,)
            ).fetchone()
            p = c.execute(
                "SELECT prefix FROM spool_prefixes WHERE message_id = ?", (message_id,)
            ).fetchone()
            return None if k is None or b is None else (k[0], b[0], p[0] if p else b"")

        found = await self.db.read(op)
        if found is None:
            raise SpoolError(f"body of message {message_id} is gone")
        key = sealing.unwrap_key(self._master, message_id, found[0])
        return found[2] + sealing.open_sealed(key, message_id, found[1])

    @staticmethod
    def prefix_op(message_id: str, prefix: bytes) -> Op:
        """Header fields to prepend on delivery (what signing added); replaces any earlier."""
        return lambda c: c.execute(
            "INSERT OR REPLACE INTO spool_prefixes VALUES (?, ?)", (message_id, prefix)
        )

    @staticmethod
    def destroy_op(message_id: str) -> Op:
        """Crypto-shred: the key goes first, then the ciphertext."""

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM spool_keys WHERE message_id = ?", (message_id,))
            c.execute("DELETE FROM spool_bodies WHERE message_id = ?", (message_id,))
            c.execute("DELETE FROM spool_prefixes WHERE message_id = ?", (message_id,))

        return op
