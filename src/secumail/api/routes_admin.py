"""`/v1/domains`, `/v1/suppressions`, `/v1/webhooks`: an account manages its own."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response

from secumail.api.context import ApiContext, Caller, decode_cursor, encode_cursor, require
from secumail.api.models import (
    AlertOut,
    DnsRecord,
    DomainCheckOut,
    DomainHealthOut,
    DomainIn,
    DomainOut,
    HealthCheckOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookOut,
)
from secumail.api.problems import ApiProblem, error_responses
from secumail.api.routes_gdpr import api_actor
from secumail.errors import ConflictError, NotFound
from secumail.mail.address import AddressError, normalise_domain, parse_address
from secumail.mail.domain_health import HealthReport, advice, title
from secumail.pipeline.account_alerts import AlertKind
from secumail.pipeline.webhooks import UnsafeTarget, check_target
from secumail.store.audit_chain import AuditKind
from secumail.store.records import Domain
from secumail.store.webhooks import Webhook

router = APIRouter()
ERRORS = error_responses(400, 401, 403, 404, 422, 429)


def _name(text: str, field: str = "name") -> str:
    try:
        return normalise_domain(text)
    except AddressError as exc:
        raise ApiProblem(422, "invalid-domain", str(exc), field=field) from exc


async def _own_domain(ctx: ApiContext, who: Caller, name: str) -> Domain:
    try:
        domain = await ctx.services.store.get_domain(_name(name))
    except NotFound as exc:
        raise ApiProblem(404, "not-found", f"no domain {name}") from exc
    if domain.account_id != who.account.id:
        raise ApiProblem(404, "not-found", f"no domain {name}")
    return domain


async def _domain_out(ctx: ApiContext, domain: Domain) -> DomainOut:
    records = await ctx.services.domains.records(domain.name, domain.token)
    keys = await ctx.services.keyring.records(domain.name)
    return DomainOut(
        name=domain.name,
        verified=domain.verified,
        verified_at=domain.verified_at,
        dkim_published=any(k.published and not k.retired for k in keys),
        records=[DnsRecord(**r) for r in records],
    )


# -- domains ---------------------------------------------------------------------------
@router.get("/v1/domains", response_model=list[DomainOut], tags=["domains"], responses=ERRORS)
async def list_domains(
    request: Request, who: Annotated[Caller, Depends(require("domains:manage"))]
) -> list[DomainOut]:
    ctx: ApiContext = request.app.state.ctx
    return [
        await _domain_out(ctx, d) for d in await ctx.services.store.list_domains(who.account.id)
    ]


@router.post(
    "/v1/domains",
    status_code=201,
    response_model=DomainOut,
    tags=["domains"],
    responses=error_responses(400, 401, 403, 409, 422, 429),
)
async def add_domain(
    request: Request, body: DomainIn, who: Annotated[Caller, Depends(require("domains:manage"))]
) -> DomainOut:
    ctx: ApiContext = request.app.state.ctx
    try:
        domain, _records = await ctx.services.domains.add(who.account.id, _name(body.name))
    except ConflictError as exc:
        raise ApiProblem(
            409, "domain-taken", "this domain belongs to another account", field="name"
        ) from exc
    await ctx.services.audit.record(
        api_actor(who), AuditKind.DOMAIN_ADDED, domain.name, {"account": who.account.id}
    )
    return await _domain_out(ctx, domain)


@router.get("/v1/domains/{name}", response_model=DomainOut, tags=["domains"], responses=ERRORS)
async def get_domain(
    request: Request, name: str, who: Annotated[Caller, Depends(require("domains:manage"))]
) -> DomainOut:
    ctx: ApiContext = request.app.state.ctx
    return await _domain_out(ctx, await _own_domain(ctx, who, name))


@router.post(
    "/v1/domains/{name}/verify", response_model=DomainCheckOut, tags=["domains"], responses=ERRORS
)
async def verify_domain(
    request: Request, name: str, who: Annotated[Caller, Depends(require("domains:manage"))]
) -> DomainCheckOut:
    ctx: ApiContext = request.app.state.ctx
    domain = await _own_domain(ctx, who, name)
    result = await ctx.services.domains.verify(domain.name)
    await ctx.services.audit.record(
        api_actor(who),
        AuditKind.DOMAIN_VERIFIED,
        domain.name,
        {"owned": result.owned, "dkim_published": result.dkim_published},
    )
    # The records the daily health check watches, DNS only: a broken one raises the
    # domain's `domain_dns_error` alert (webhook and mail) once, a fixed one resolves it.
    await ctx.services.domain_health.check(domain.name, inbound=False)
    return DomainCheckOut(
        name=domain.name,
        verified=result.verified,
        dkim_published=result.dkim_published,
        checks=result.checks,
    )


@router.get(
    "/v1/domains/{name}/health",
    response_model=DomainHealthOut,
    tags=["domains"],
    responses=ERRORS,
)
async def domain_health(
    request: Request,
    name: str,
    who: Annotated[Caller, Depends(require("domains:manage"))],
    refresh: Annotated[bool, Query(description="check now instead of the last report")] = False,
) -> DomainHealthOut:
    """The domain's health report (the daily check): its sending records (ownership,
    DKIM, SPF, DMARC) and its own inbound mail (MX, STARTTLS, DANE, MTA-STS, TLSRPT).
    The last report is served; `refresh=true`, or no report yet, checks now."""
    ctx: ApiContext = request.app.state.ctx
    domain = await _own_domain(ctx, who, name)
    health = ctx.services.domain_health
    report = None if refresh else await health.last(domain.name)
    if report is None:
        report = await health.check(domain.name)
    open_alerts = await ctx.services.account_alerts.open(who.account.id, str(AlertKind.DOMAIN_DNS))
    return _health_out(report, any(a.about == domain.name for a in open_alerts))


def _health_out(report: HealthReport, alert_open: bool) -> DomainHealthOut:
    data = report.to_dict()
    return DomainHealthOut(
        domain=report.domain,
        checked_at=report.checked_at,
        status=data["status"],
        alert_open=alert_open,
        checks=[
            HealthCheckOut(
                id=c.id,
                part=data["checks"][i]["part"],
                status=data["checks"][i]["status"],
                alerting=report.alerting(c),
                title=title(c),
                record=c.record,
                found=c.found,
                problem=c.problem,
                expected=c.expected,
                advice={
                    lang: text for lang in ("en", "nl") if (text := advice(c, report.domain, lang))
                },
            )
            for i, c in enumerate(report.checks)
        ],
    )


@router.delete("/v1/domains/{name}", status_code=204, tags=["domains"], responses=ERRORS)
async def delete_domain(
    request: Request, name: str, who: Annotated[Caller, Depends(require("domains:manage"))]
) -> Response:
    ctx: ApiContext = request.app.state.ctx
    domain = await _own_domain(ctx, who, name)
    await ctx.services.store.delete_domain(domain.name)
    await ctx.services.audit.record(
        api_actor(who), AuditKind.DOMAIN_REMOVED, domain.name, {"account": who.account.id}
    )
    return Response(status_code=204)


# -- suppressions ------------------------------------------------------------------------
def _address(text: str, field: str = "address") -> str:
    try:
        return str(parse_address(text.strip(), utf8=not text.isascii())).lower()
    except AddressError as exc:
        raise ApiProblem(422, "invalid-address", str(exc), field=field) from exc


@router.get(
    "/v1/suppressions", response_model=SuppressionPage, tags=["suppressions"], responses=ERRORS
)
async def list_suppressions(
    request: Request,
    who: Annotated[Caller, Depends(require("suppressions:manage"))],
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> SuppressionPage:
    ctx: ApiContext = request.app.state.ctx
    rows = await ctx.services.suppressions.list(
        who.account.id, after=decode_cursor(cursor), limit=limit + 1
    )
    page = rows[:limit]
    return SuppressionPage(
        items=[
            SuppressionOut(
                address=s.address,
                reason=s.reason,
                origin=s.origin,
                message_id=s.message_id,
                created_at=s.created_at,
            )
            for s in page
        ],
        next_cursor=encode_cursor(page[-1].address) if len(rows) > limit and page else None,
    )


@router.post(
    "/v1/suppressions",
    status_code=201,
    response_model=SuppressionOut,
    tags=["suppressions"],
    responses=ERRORS,
)
async def add_suppression(
    request: Request,
    body: SuppressionIn,
    who: Annotated[Caller, Depends(require("suppressions:manage"))],
) -> SuppressionOut:
    ctx: ApiContext = request.app.state.ctx
    if any(c in body.reason for c in "\r\n\x00"):
        raise ApiProblem(422, "invalid-input", "CR, LF or NUL in reason", field="reason")
    address = _address(body.address)
    if await ctx.services.suppressions.add(who.account.id, address, body.reason, "manual"):
        await ctx.services.audit.record(
            api_actor(who), AuditKind.SUPPRESSION_ADDED, address, {"account": who.account.id}
        )
    found = await ctx.services.suppressions.find(who.account.id, address)
    assert found is not None
    return SuppressionOut(
        address=found.address,
        reason=found.reason,
        origin=found.origin,
        message_id=found.message_id,
        created_at=found.created_at,
    )


@router.get(
    "/v1/suppressions/{address}",
    response_model=SuppressionOut,
    tags=["suppressions"],
    responses=ERRORS,
)
async def get_suppression(
    request: Request, address: str, who: Annotated[Caller, Depends(require("suppressions:manage"))]
) -> SuppressionOut:
    ctx: ApiContext = request.app.state.ctx
    found = await ctx.services.suppressions.find(who.account.id, _address(address))
    if found is None:
        raise ApiProblem(404, "not-found", f"{address} is not suppressed")
    return SuppressionOut(
        address=found.address,
        reason=found.reason,
        origin=found.origin,
        message_id=found.message_id,
        created_at=found.created_at,
    )


@router.delete(
    "/v1/suppressions/{address}", status_code=204, tags=["suppressions"], responses=ERRORS
)
async def delete_suppression(
    request: Request, address: str, who: Annotated[Caller, Depends(require("suppressions:manage"))]
) -> Response:
    ctx: ApiContext = request.app.state.ctx
    if not await ctx.services.suppressions.remove(who.account.id, _address(address)):
        raise ApiProblem(404, "not-found", f"{address} is not suppressed")
    await ctx.services.audit.record(
        api_actor(who),
        AuditKind.SUPPRESSION_REMOVED,
        _address(address),
        {"account": who.account.id},
    )
    return Response(status_code=204)


# -- alerts ------------------------------------------------------------------------------
@router.get("/v1/alerts", response_model=list[AlertOut], tags=["webhooks"], responses=ERRORS)
async def list_alerts(
    request: Request, who: Annotated[Caller, Depends(require("webhooks:manage"))]
) -> list[AlertOut]:
    """The alerts raised (as webhook events) and not yet resolved, oldest first."""
    ctx: ApiContext = request.app.state.ctx
    return [
        AlertOut(kind=a.kind, about=a.about, raised_at=a.raised_at, detail=a.detail)
        for a in await ctx.services.account_alerts.open(who.account.id)
    ]


# -- webhooks ----------------------------------------------------------------------------
async def _own_hook(ctx: ApiContext, who: Caller, hook_id: str) -> Webhook:
    hook = await ctx.services.webhooks.get(hook_id)
    if hook is None or hook.account_id != who.account.id:
        raise ApiProblem(404, "not-found", f"no webhook {hook_id}")
    return hook


@router.get("/v1/webhooks", response_model=list[WebhookOut], tags=["webhooks"], responses=ERRORS)
async def list_webhooks(
    request: Request, who: Annotated[Caller, Depends(require("webhooks:manage"))]
) -> list[WebhookOut]:
    ctx: ApiContext = request.app.state.ctx
    return [
        WebhookOut(id=h.id, url=h.url, events=list(h.events), created_at=h.created_at)
        for h in await ctx.services.webhooks.subscriptions(who.account.id)
    ]


@router.post(
    "/v1/webhooks", status_code=201, response_model=WebhookOut, tags=["webhooks"], responses=ERRORS
)
async def add_webhook(
    request: Request, body: WebhookIn, who: Annotated[Caller, Depends(require("webhooks:manage"))]
) -> WebhookOut:
    ctx: ApiContext = request.app.state.ctx
    try:
        host = urlsplit(body.url).hostname or ""
        addresses = await ctx.services.resolver.addresses(host)
        check_target(body.url, addresses, allow_private=ctx.settings.api.webhooks_allow_private)
    except (UnsafeTarget, ValueError) as exc:
        raise ApiProblem(422, "unsafe-webhook-target", str(exc), field="url") from exc
    except Exception as exc:
        raise ApiProblem(
            422, "unsafe-webhook-target", f"cannot resolve the webhook host: {exc}", field="url"
        ) from exc
    hook = await ctx.services.webhooks.create(
        who.account.id, body.url, list(body.events), body.secret
    )
    await ctx.services.audit.record(
        api_actor(who), AuditKind.WEBHOOK_ADDED, hook.id, {"account": who.account.id}
    )
    return WebhookOut(
        id=hook.id,
        url=hook.url,
        events=list(hook.events),
        created_at=hook.created_at,
        secret=hook.secret,
    )


@router.delete("/v1/webhooks/{hook_id}", status_code=204, tags=["webhooks"], responses=ERRORS)
async def delete_webhook(
    request: Request, hook_id: str, who: Annotated[Caller, Depends(require("webhooks:manage"))]
) -> Response:
    ctx: ApiContext = request.app.state.ctx
    await _own_hook(ctx, who, hook_id)
    await ctx.services.webhooks.delete(hook_id)
    await ctx.services.audit.record(
        api_actor(who), AuditKind.WEBHOOK_REMOVED, hook_id, {"account": who.account.id}
    )
    return Response(status_code=204)


@router.get(
    "/v1/webhooks/{hook_id}/deliveries",
    response_model=list[WebhookDeliveryOut],
    tags=["webhooks"],
    responses=ERRORS,
)
async def webhook_deliveries(
    request: Request, hook_id: str, who: Annotated[Caller, Depends(require("webhooks:manage"))]
) -> list[WebhookDeliveryOut]:
    ctx: ApiContext = request.app.state.ctx
    await _own_hook(ctx, who, hook_id)
    return [
        WebhookDeliveryOut(
            id=d.id,
            event=d.event,
            event_id=d.event_id,
            status=d.status,
            attempts=d.attempts,
            last_status=d.last_status,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
        for d in await ctx.services.webhooks.deliveries(hook_id)
    ]
