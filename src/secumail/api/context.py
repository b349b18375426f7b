"""What the API handlers use, and who is calling: token checking, scopes, rate limits."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request

from secumail.api.problems import ApiProblem
from secumail.api.refusals import refused_login
from secumail.api.services import ApiServices
from secumail.api.tokens import (
    SCOPES,
    OidcVerifier,
    TokenError,
    TokenIssuer,
    TokenPrincipal,
    unverified_issuer,
)
from secumail.config import Settings
from secumail.errors import NotFound
from secumail.pipeline.auth_throttle import AuthThrottle
from secumail.pipeline.sender_watch import Sender, SenderWatch
from secumail.store.records import Account


@dataclass
class RateLimiter:
    """A token bucket per account: `per_minute` requests, bursts up to the same."""

    per_minute: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


@dataclass
class ApiContext:
    settings: Settings
    services: ApiServices  # secumail.app.Services, seen through what the API uses
    issuer: TokenIssuer
    oidc: OidcVerifier | None
    limiter: RateLimiter
    counters: dict[str, int] = field(default_factory=dict)
    throttle: AuthThrottle | None = None  # failed logins, shared with SMTP AUTH
    senders: SenderWatch | None = None  # TLS of submissions and login bursts, as SMTP's


@dataclass(frozen=True)
class Caller:
    account: Account
    principal: TokenPrincipal
    sender: Sender | None = None  # the credential behind a token of ours (not OIDC)


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{detail}"'},
    )


async def caller(request: Request) -> Caller:
    ctx: ApiContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(
            401,
            "unauthorized",
            "a Bearer access token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = token.strip()
    try:
        iss = unverified_issuer(token)
        if iss == ctx.issuer.issuer:
            principal = ctx.issuer.verify(token)
            account = await ctx.services.store.get_account(principal.account_id)
            cred = await ctx.services.store.credential_by_username(principal.client_id)
            if cred is None or cred.revoked_at is not None:
                raise TokenError("the credential behind this token has been revoked")
            sender: Sender | None = Sender(cred.id, cred.account_id, cred.username)
        elif ctx.oidc is not None and iss == ctx.oidc.issuer:
            claims = await ctx.oidc.verify(token)
            name = claims.get(ctx.oidc.account_claim)
            if not isinstance(name, str) or not name:
                raise TokenError(f"token has no {ctx.oidc.account_claim!r} claim naming an account")
            account = await ctx.services.store.get_account(name)
            raw = claims.get("scope") or claims.get("scp") or claims.get("roles") or ""
            scopes = set(raw.split() if isinstance(raw, str) else raw) & set(SCOPES)
            principal = TokenPrincipal(
                account.id, str(claims.get("sub", "")), frozenset(scopes), "oidc"
            )
            sender = None
        else:
            raise TokenError("token from an unknown issuer")
    except TokenError as exc:
        await refused_login(ctx, request, "bearer-token", str(exc))
        raise _unauthorized(str(exc)) from exc
    except NotFound as exc:
        await refused_login(ctx, request, "bearer-token", "the token's account does not exist")
        raise _unauthorized("the token's account does not exist") from exc
    wait = ctx.limiter.take(account.id)
    if wait > 0:
        raise ApiProblem(
            429,
            "rate-limited",
            "too many requests for this account",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    return Caller(account, principal, sender)


def require(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    async def check(request: Request) -> Caller:
        who = await caller(request)
        if scope not in who.principal.scopes:
            raise ApiProblem(403, "insufficient-scope", f"this token lacks the scope {scope}")
        return who

    check.__name__ = f"require_{scope.replace(':', '_')}"
    return check


def count(ctx: ApiContext, name: str, n: int = 1) -> None:
    ctx.counters[name] = ctx.counters.get(name, 0) + n


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    if not cursor:
        return ""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ApiProblem(
            422, "invalid-cursor", "the cursor is not one this API issued", field="cursor"
        ) from exc
    if not isinstance(value, str):
        raise ApiProblem(
            422, "invalid-cursor", "the cursor is not one this API issued", field="cursor"
        )
    return value
