"""A small client for the REST API in tests: httpx over TLS to the gateway."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.world import GatewayProcess


class Api:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.base = f"https://127.0.0.1:{gateway.api_port}"
        self.client = httpx.Client(base_url=self.base, verify=gateway.client_context(), timeout=30)
        gateway.http_clients.append(self.client)
        self.token: str | None = None

    def credential(self, account: str, *scopes: str) -> tuple[str, str]:
        extra = [x for s in scopes for x in ("--scope", s)]
        out = self.gateway.cli("credential", "create", account, "--kind", "api", *extra)
        return out["client_id"], out["client_secret"]

    def login(self, account: str, *scopes: str) -> Api:
        client_id, secret = self.credential(account, *scopes)
        r = self.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]
        return self

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**h, **(extra or {})}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(path, headers=self._headers(kw.pop("headers", None)), **kw)


def problem(r: httpx.Response, status: int) -> dict:
    """Assert an RFC 9457 problem document with `status`; return it."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers[
        "content-type"
    ]
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://") and body["detail"]
    return body
