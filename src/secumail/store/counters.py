"""Operator counters: how often something was dropped on purpose (a bounce to a forged
address, say), kept across restarts and processes, shown by `secumail queue`."""

from __future__ import annotations

from secumail.store.database import Database, Op


class Counters:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def bump_op(name: str, by: int = 1) -> Op:
        return lambda c: c.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    async def bump(self, name: str, by: int = 1) -> None:
        await self.db.run(self.bump_op(name, by))

    async def all(self, prefix: str = "") -> dict[str, int]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT name, value FROM counters WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        )
        return {r[0]: r[1] for r in rows}
