"""Access tokens: our own short-lived JWTs (RFC 9068 profile, EdDSA) from the client
credentials grant, and tokens of an external OpenID Connect issuer when configured.

Verification is pinned (RFC 8725 §3.1): our tokens only as EdDSA with our key, external
tokens only with the configured algorithms and the issuer's JWKS; `alg: none`, HS/RS
confusion, an expired token, the wrong audience or issuer are refused with the reason.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from secumail.keyfiles import pem, write_file

SCOPES = (
    "messages:send",
    "messages:read",
    "domains:manage",
    "webhooks:manage",
    "suppressions:manage",
)
AUDIENCE = "secumail-api"


class TokenError(Exception):
    """Why a token is not accepted (the 401 detail)."""


@dataclass(frozen=True, slots=True)
class TokenPrincipal:
    account_id: str
    client_id: str
    scopes: frozenset[str]
    source: str  # "secumail" | "oidc"


def _load_or_make_key(path: Path) -> ed25519.Ed25519PrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    write_file(path, pem(key), private=True, overwrite=False)
    return key


class TokenIssuer:
    def __init__(self, key_file: Path, issuer: str, *, ttl: int = 900) -> None:
        self.key = _load_or_make_key(key_file)
        self.public = self.key.public_key()
        self.issuer = issuer
        self.ttl = ttl

    def issue(self, account_id: str, client_id: str, scopes: frozenset[str]) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(12),
            "client_id": client_id,
            "scope": " ".join(sorted(scopes)),
            "acct": account_id,
        }
        token = jwt.encode(claims, self.key, algorithm="EdDSA", headers={"typ": "at+jwt"})
        return token, self.ttl

    def verify(self, token: str) -> TokenPrincipal:
        try:
            claims = jwt.decode(
                token,
                self.public,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("token from another issuer") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError("token algorithm not allowed (only EdDSA)") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        return TokenPrincipal(
            str(claims.get("acct", "")),
            str(claims["sub"]),
            frozenset(str(claims.get("scope", "")).split()),
            "secumail",
        )


def unverified_issuer(token: str) -> str:
    """The `iss` claim, read without verification, only to choose the verifier."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"malformed token: {exc}") from exc
    if header.get("alg") in (None, "none"):
        raise TokenError("unsigned tokens (alg none) are refused")
    return str(claims.get("iss", ""))


class OidcVerifier:
    """Tokens of an external issuer (Keycloak, Entra ID): JWKS fetched and cached."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        algorithms: list[str],
        account_claim: str,
        fetch_jwks: Callable[[], Awaitable[dict[str, Any]]],
        cache_seconds: float = 600.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.account_claim = account_claim
        self._fetch = fetch_jwks  # async () -> dict
        self._jwks: dict[str, Any] = {}
        self._fetched = 0.0
        self.cache_seconds = cache_seconds

    async def _keys(self, force: bool = False) -> dict[str, Any]:
        if force or not self._jwks or time.monotonic() - self._fetched > self.cache_seconds:
            document = await self._fetch()
            self._jwks = {k.get("kid", ""): k for k in document.get("keys", [])}
            self._fetched = time.monotonic()
        return self._jwks

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"malformed token: {exc}") from exc
        keys = await self._keys()
        if kid not in keys and time.monotonic() - self._fetched > 30:
            keys = await self._keys(force=True)
        if kid not in keys:
            raise TokenError("token signed with a key the issuer does not publish")
        try:
            key = jwt.PyJWK(keys[kid])
            return jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("token is for another audience") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError(
                f"token algorithm not allowed (only {', '.join(self.algorithms)})"
            ) from exc
        except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
            raise TokenError(f"invalid token: {exc}") from exc


def jwks_from(body: bytes) -> dict[str, Any]:
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TokenError("the issuer's JWKS is malformed")
    return document
