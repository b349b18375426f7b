"""Secure-route state kept across restarts: MTA-STS policies, downgrade memory, operator
TLS strategies, TLS-report counters."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from secumail.store.database import Database, Op


@dataclass(frozen=True, slots=True)
class CachedStsPolicy:
    domain: str
    policy_id: str | None
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class RouteMemory:
    domain: str
    method: str
    seen_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class TlsPolicyRow:
    scope: str  # "domain" | "account"
    name: str
    dane: str
    mta_sts: str
    starttls: str
    min_tls: str
    updated_at: float


class RoutingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- MTA-STS policy cache (RFC 8461 §5.1) ------------------------------------------
    async def sts_policy(self, domain: str) -> CachedStsPolicy | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM mta_sts_policies WHERE domain = ?", (domain,)
            ).fetchone()
        )
        if row is None:
            return None
        return CachedStsPolicy(
            row["domain"],
            row["policy_id"],
            row["mode"],
            tuple(json.loads(row["mx"])),
            row["max_age"],
            row["fetched_at"],
            row["expires_at"],
        )

    async def put_sts_policy(self, policy: CachedStsPolicy) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO mta_sts_policies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    policy.domain,
                    policy.policy_id,
                    policy.mode,
                    json.dumps(list(policy.mx)),
                    policy.max_age,
                    policy.fetched_at,
                    policy.expires_at,
                ),
            )
        )

    async def forget_sts_policy(self, domain: str) -> None:
        await self.db.run(
            lambda c: c.execute("DELETE FROM mta_sts_policies WHERE domain = ?", (domain,))
        )

    # -- downgrade memory --------------------------------------------------------------
    async def memory(self, domain: str, now: float | None = None) -> RouteMemory | None:
        now = time.time() if now is None else now
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM route_memory WHERE domain = ? AND expires_at > ?", (domain, now)
            ).fetchone()
        )
        return (
            None
            if row is None
            else RouteMemory(row["domain"], row["method"], row["seen_at"], row["expires_at"])
        )

    async def remember(
        self, domain: str, method: str, strength: int, keep: float, strengths: dict[str, int]
    ) -> None:
        """Keep the strongest method seen (never lower it here); refresh its expiry."""

        def op(c: sqlite3.Connection) -> None:
            now = time.time()
            row = c.execute(
                "SELECT method FROM route_memory WHERE domain = ? AND expires_at > ?", (domain, now)
            ).fetchone()
            if row is not None and strengths.get(row["method"], 0) > strength:
                return
            c.execute(
                "INSERT OR REPLACE INTO route_memory VALUES (?, ?, ?, ?)",
                (domain, method, now, now + keep),
            )

        await self.db.run(op)

    async def forget_memory(self, domain: str) -> bool:
        return bool(
            await self.db.run(
                lambda c: c.execute("DELETE FROM route_memory WHERE domain = ?", (domain,)).rowcount
            )
        )

    async def memories(self) -> list[RouteMemory]:
        rows = await self.db.run(
            lambda c: c.execute("SELECT * FROM route_memory ORDER BY domain").fetchall()
        )
        return [RouteMemory(r["domain"], r["method"], r["seen_at"], r["expires_at"]) for r in rows]

    # -- operator TLS strategies ---------------------------------------------------------
    async def tls_policy(self, scope: str, name: str) -> TlsPolicyRow | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM tls_policies WHERE scope = ? AND name = ?", (scope, name)
            ).fetchone()
        )
        return None if row is None else _policy(row)

    async def tls_policies(self) -> list[TlsPolicyRow]:
        rows = await self.db.run(
            lambda c: c.execute("SELECT * FROM tls_policies ORDER BY scope, name").fetchall()
        )
        return [_policy(r) for r in rows]

    async def put_tls_policy(self, row: TlsPolicyRow) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO tls_policies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.scope,
                    row.name,
                    row.dane,
                    row.mta_sts,
                    row.starttls,
                    row.min_tls,
                    row.updated_at,
                ),
            )
        )

    async def delete_tls_policy(self, scope: str, name: str) -> bool:
        return bool(
            await self.db.run(
                lambda c: (
                    c.execute(
                        "DELETE FROM tls_policies WHERE scope = ? AND name = ?", (scope, name)
                    ).rowcount
                )
            )
        )

    # -- TLS reporting (RFC 8460) ----------------------------------------------------------
    @staticmethod
    def count_result_op(
        day: str,
        policy_domain: str,
        policy_type: str,
        policy_string: list[str],
        mx_host: str,
        receiving_ip: str,
        result_type: str,
        detail: str,
    ) -> Op:
        """One more session for this (policy, MX, result); result_type "" = success."""
        return lambda c: c.execute(
            "INSERT INTO tlsrpt_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT (day, policy_domain, policy_type, policy_string, mx_host, receiving_ip,"
            " result_type) DO UPDATE SET count = count + 1, detail = excluded.detail",
            (
                day,
                policy_domain,
                policy_type,
                json.dumps(policy_string),
                mx_host,
                receiving_ip,
                result_type,
                detail,
            ),
        )

    async def results(self, day: str) -> list[sqlite3.Row]:
        return await self.db.run(
            lambda c: c.execute(
                "SELECT * FROM tlsrpt_results WHERE day = ? ORDER BY policy_domain", (day,)
            ).fetchall()
        )

    async def report_days(self, before: str) -> list[tuple[str, str]]:
        """(day, policy domain) pairs with results before `before` not yet reported."""
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT DISTINCT r.day, r.policy_domain FROM tlsrpt_results r LEFT JOIN tlsrpt_sent s"
                " ON s.day = r.day AND s.policy_domain = r.policy_domain"
                " WHERE r.day < ? AND s.day IS NULL ORDER BY r.day",
                (before,),
            ).fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    async def mark_reported(self, day: str, policy_domain: str, outcome: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO tlsrpt_sent VALUES (?, ?, ?, ?)",
                (day, policy_domain, time.time(), outcome),
            )
        )


def _policy(r: sqlite3.Row) -> TlsPolicyRow:
    return TlsPolicyRow(
        r["scope"], r["name"], r["dane"], r["mta_sts"], r["starttls"], r["min_tls"], r["updated_at"]
    )
