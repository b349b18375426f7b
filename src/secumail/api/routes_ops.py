"""`/oauth/token` (RFC 6749 §4.4), `/v1/checks` (preflight), `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import asdict
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from secumail.api.context import ApiContext, Caller, require
from secumail.api.models import CheckOut, ChecksIn, ChecksOut, TokenOut
from secumail.api.problems import ApiProblem, error_responses, problem_response
from secumail.api.refusals import refused_login
from secumail.api.tokens import SCOPES
from secumail.pipeline.bounce_intake import DROPPED
from secumail.pipeline.scanning import UNAVAILABLE as SCAN_UNAVAILABLE
from secumail.pipeline.sender_watch import Sender
from secumail.pipeline.test_address import DROPPED as TEST_DROPPED
from secumail.pipeline.tlsrpt_intake import DROPPED as TLSRPT_DROPPED
from secumail.pki.passwords import dummy_hash, verify_secret

router = APIRouter()

TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                    },
                    "required": ["grant_type"],
                }
            }
        },
    }
}


def _oauth_error(status: int, error: str, detail: str) -> JSONResponse:
    """RFC 6749 §5.2 `error` inside an RFC 9457 problem document."""
    response = problem_response(status, f"oauth-{error.replace('_', '-')}", detail)
    body = json.loads(bytes(response.body))
    body["error"], body["error_description"] = error, detail
    headers = {"WWW-Authenticate": 'Basic realm="secumail"'} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


@router.post(
    "/oauth/token",
    response_model=TokenOut,
    tags=["auth"],
    openapi_extra=TOKEN_BODY,
    responses=error_responses(400, 401, 413, 429),
)
async def token(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    if (
        request.headers.get("content-type", "").split(";")[0].strip()
        != "application/x-www-form-urlencoded"
    ):
        return _oauth_error(
            400, "invalid_request", "send application/x-www-form-urlencoded (RFC 6749 §4.4.2)"
        )
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(
            400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
        )
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return _oauth_error(401, "invalid_client", "malformed Basic credentials")
    ip = request.client.host if request.client else "unknown"
    throttle = ctx.throttle
    if throttle is not None and throttle.blocked(ip, client_id):
        # Checked before the slow hash: a guesser costs no scrypt once throttled.
        await refused_login(ctx, request, client_id, "throttled after failed logins")
        if ctx.senders is not None:
            await ctx.senders.login_throttled(client_id, ctx.services.store.credential_by_username)
        return problem_response(
            429,
            "too-many-failures",
            "too many failed logins from this address or for this client; try again later",
            headers={"Retry-After": str(int(ctx.settings.submission.auth_failure_window))},
        )
    cred = await ctx.services.store.credential_by_username(client_id) if client_id else None
    usable = cred is not None and cred.kind == "api" and cred.revoked_at is None
    ok = await asyncio.to_thread(verify_secret, secret, cred.secret_hash if cred else dummy_hash())
    if not (ok and usable and cred is not None):
        if throttle is not None:
            throttle.failed(ip, client_id)
        if ctx.senders is not None:
            ctx.senders.login_failed(client_id, Sender.of(cred))
        await refused_login(ctx, request, client_id, "unknown client or wrong secret")
        return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
    allowed = set(cred.scopes or SCOPES)
    asked = set(form.get("scope", "").split()) or allowed
    if not asked <= allowed:
        return _oauth_error(
            400, "invalid_scope", f"this client may ask for: {' '.join(sorted(allowed))}"
        )
    access, ttl = ctx.issuer.issue(cred.account_id, cred.username, frozenset(asked))
    return JSONResponse(
        TokenOut(access_token=access, expires_in=ttl, scope=" ".join(sorted(asked))).model_dump(),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.post(
    "/v1/checks",
    response_model=ChecksOut,
    tags=["checks"],
    responses=error_responses(400, 401, 403, 422, 429),
)
async def checks(
    request: Request, body: ChecksIn, who: Annotated[Caller, Depends(require("messages:send"))]
) -> ChecksOut:
    """Preflight: can these recipients be reached securely? (per address: secure, method, reasons)"""
    ctx: ApiContext = request.app.state.ctx
    if len(body.addresses) > ctx.settings.api.max_check_addresses:
        raise ApiProblem(
            422,
            "too-many-addresses",
            f"at most {ctx.settings.api.max_check_addresses}",
            field="addresses",
        )
    for i, a in enumerate(body.addresses):
        if any(c in a for c in "\r\n\x00") or not a.strip():
            raise ApiProblem(
                422, "invalid-address", "not an address or domain", field=f"addresses[{i}]"
            )
    results = await ctx.services.preflight.check_many(body.addresses, who.account)
    return ChecksOut(
        results=[
            CheckOut(
                address=r.target,
                domain=r.domain,
                secure=r.secure,
                method=r.method,
                reasons=r.reasons,
                mx=[asdict(m) for m in r.mx],
                dnssec=r.dnssec,
                mta_sts=r.mta_sts,
            )
            for r in results
        ]
    )


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], responses=error_responses(503))
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the store answers and the intake is under its bound."""
    ctx: ApiContext = request.app.state.ctx
    try:
        full = await asyncio.wait_for(ctx.services.intake.full(), 5)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is returned
        return problem_response(503, "not-ready", f"the store does not answer: {exc}")
    if full:
        return problem_response(
            503, "not-ready", "the intake queue is full", headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: queue depth per stage, admissions refused, deliveries by
    outcome and route method, TLS versions seen, bounces and TLS reports the inbound MX
    dropped, test messages it did not answer."""
    ctx: ApiContext = request.app.state.ctx
    depths = await ctx.services.bus.depths()
    stats = await ctx.services.store.delivery_stats()
    lines = ["# TYPE secumail_queue_depth gauge"]
    for stage in ctx.settings.pipeline.stages:
        lines.append(f'secumail_queue_depth{{stage="{stage}"}} {depths.get(stage, 0)}')
    lines += [
        "# TYPE secumail_admissions_refused_total counter",
        f"secumail_admissions_refused_total {ctx.counters.get('admissions_refused', 0)}",
        "# TYPE secumail_deliveries_total counter",
    ]
    for (outcome, route), n in sorted(stats["by_outcome"].items()):
        lines.append(f'secumail_deliveries_total{{outcome="{outcome}",route="{route}"}} {n}')
    lines.append("# TYPE secumail_tls_sessions_total counter")
    for version, n in sorted(stats["tls_versions"].items()):
        lines.append(f'secumail_tls_sessions_total{{version="{version}"}} {n}')
    lines.append("# TYPE secumail_bounces_dropped_total counter")
    for name, n in (await ctx.services.counters.all(DROPPED)).items():
        reason = name.removeprefix(DROPPED)
        lines.append(f'secumail_bounces_dropped_total{{reason="{reason}"}} {n}')
    lines.append("# TYPE secumail_tls_reports_dropped_total counter")
    for name, n in (await ctx.services.counters.all(TLSRPT_DROPPED)).items():
        reason = name.removeprefix(TLSRPT_DROPPED)
        lines.append(f'secumail_tls_reports_dropped_total{{reason="{reason}"}} {n}')
    lines.append("# TYPE secumail_scanner_unavailable_total counter")
    for name, n in (await ctx.services.counters.all(SCAN_UNAVAILABLE)).items():
        engine = name.removeprefix(SCAN_UNAVAILABLE)
        lines.append(f'secumail_scanner_unavailable_total{{engine="{engine}"}} {n}')
    lines.append("# TYPE secumail_test_address_dropped_total counter")
    for name, n in (await ctx.services.counters.all(TEST_DROPPED)).items():
        reason = name.removeprefix(TEST_DROPPED)
        lines.append(f'secumail_test_address_dropped_total{{reason="{reason}"}} {n}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
