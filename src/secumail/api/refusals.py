"""Refused API logins (a wrong client secret, a bad or revoked token) in the audit log.

A client can cause a refusal with every request, so each network address gets at most
`PER_MINUTE` audit entries a minute; beyond that the refusal is only logged (the count of
those left out goes into the next entry that is written).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from fastapi import Request

from secumail.store.audit_chain import AuditKind

PER_MINUTE = 10
log = logging.getLogger("secumail.api")


@dataclass
class RefusalDamper:
    per_minute: int = PER_MINUTE
    _seen: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # ip -> start, n, left out

    def admit(self, ip: str, now: float | None = None) -> int | None:
        """None when this refusal is not to be recorded; else how many were left out."""
        now = time.monotonic() if now is None else now
        start, n, left_out = self._seen.get(ip, (now, 0, 0))
        if now - start >= 60:
            start, n = now, 0
        if n >= self.per_minute:
            self._seen[ip] = (start, n, left_out + 1)
            return None
        self._seen[ip] = (start, n + 1, 0)
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < 60}
        return left_out


async def refused_login(ctx: object, request: Request, subject: str, reason: str) -> None:
    """Record a refused API login from the client's address (`api:<ip>`)."""
    state = request.app.state
    damper = getattr(state, "refusals", None)
    if damper is None:
        damper = state.refusals = RefusalDamper()
    ip = request.client.host if request.client else "unknown"
    left_out = damper.admit(ip)
    if left_out is None:
        log.warning("API login refused from %s (not audited: too many): %s", ip, reason)
        return
    detail: dict[str, object] = {"channel": "api", "reason": reason[:200].replace("@", "(at)")}
    if left_out:
        detail["not_recorded_before"] = left_out
    services = getattr(ctx, "services", None)
    if services is not None:
        await services.audit.record(f"api:{ip}", AuditKind.LOGIN_REFUSED, subject[:64], detail)
