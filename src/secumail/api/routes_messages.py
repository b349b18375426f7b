"""`/v1/messages`: send (structured JSON or raw MIME), list, show, evidence."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from secumail.api.compose import compose, raw_recipients
from secumail.api.context import ApiContext, Caller, count, decode_cursor, encode_cursor, require
from secumail.api.idempotency import matches, request_digest
from secumail.api.models import (
    AcceptedOut,
    AttemptOut,
    EventOut,
    EvidenceOut,
    MessageIn,
    MessageOut,
    MessagePage,
    MessageSummary,
    RecipientOut,
)
from secumail.api.problems import ApiProblem, error_responses
from secumail.api.tls_scope import connection_tls
from secumail.errors import EvidenceError, NotFound
from secumail.mail.status import RecipientStatus
from secumail.pipeline.acceptance import Refusal, Submission
from secumail.pki.evidence import verify_evidence
from secumail.store.records import MessageRecord

router = APIRouter(tags=["messages"])

SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/MessageIn"}},
            "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _recipients(record: MessageRecord) -> list[RecipientOut]:
    return [
        RecipientOut(
            address=r.address,
            status=r.status.value,
            reply=r.reply,
            enhanced=r.enhanced,
            attempts=r.attempts,
        )
        for r in record.recipients
    ]


async def _own_message(ctx: ApiContext, who: Caller, message_id: str) -> MessageRecord:
    try:
        record = await ctx.services.store.message(message_id)
    except NotFound as exc:
        raise ApiProblem(404, "not-found", f"no message {message_id}") from exc
    if record.account_id != who.account.id or record.dsn_of:
        raise ApiProblem(404, "not-found", f"no message {message_id}")  # never reveal others' ids
    return record


@router.post(
    "/v1/messages",
    status_code=202,
    response_model=AcceptedOut,
    openapi_extra=SEND_BODY,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
    summary="Send a message (JSON fields or raw MIME); Idempotency-Key makes retries safe",
)
async def send_message(
    request: Request, who: Annotated[Caller, Depends(require("messages:send"))]
) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    key = request.headers.get("idempotency-key")
    if key is not None:
        replay = await _replay(ctx, who, _checked_key(key), ctype, raw)
        if replay is not None:
            return replay
    submission = _submission(ctx, who, ctype, raw)
    message_id = await _accept(ctx, submission)
    if ctx.senders is not None and who.sender is not None:
        version, cipher = connection_tls(request.scope)
        await ctx.senders.submitted(who.sender, "api", version, cipher)
    response = AcceptedOut(
        id=message_id,
        recipients=[
            RecipientOut(address=str(a), status=RecipientStatus.QUEUED.value)
            for a in submission.recipients
        ],
    ).model_dump()
    if key is not None:
        await ctx.services.idempotency.remember(
            who.account.id, key, request_digest(ctype, raw), 202, response
        )
    return JSONResponse(response, status_code=202)


def _checked_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiProblem(
            422, "invalid-idempotency-key", "1 to 255 printable characters", field="Idempotency-Key"
        )
    return key


async def _replay(
    ctx: ApiContext, who: Caller, key: str, ctype: str, raw: bytes
) -> JSONResponse | None:
    """The answer already given to this Idempotency-Key, when it was given to this same
    request; None when the key is new."""
    seen = await ctx.services.idempotency.find(who.account.id, key)
    if seen is None:
        return None
    request_hash, status, response = seen
    if not matches(request_hash, ctype, raw):
        raise ApiProblem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used for another request",
            field="Idempotency-Key",
        )
    return JSONResponse(response, status_code=status, headers={"Idempotent-Replayed": "true"})


def _submission(ctx: ApiContext, who: Caller, ctype: str, raw: bytes) -> Submission:
    """The message the request body describes: JSON fields, or raw MIME as it is."""
    metadata: dict[str, str] = {}
    requiretls = False
    if ctype == "application/json":
        body = _message_in(raw)
        sender, rcpts, message = compose(body, ctx.settings.server.hostname)
        metadata, requiretls = body.metadata, body.require_tls
        _check_metadata(metadata)
    elif ctype == "message/rfc822":
        sender, rcpts, message = raw_recipients(raw)
    else:
        raise ApiProblem(415, "unsupported-media-type", "send application/json or message/rfc822")
    smtputf8 = not all(a.is_ascii and a.domain.isascii() for a in [sender, *rcpts])
    return Submission(
        who.account,
        sender,
        rcpts,
        message,
        "HTTPS",
        smtputf8=smtputf8,
        requiretls=requiretls,
        metadata=metadata,
    )


def _message_in(raw: bytes) -> MessageIn:
    try:
        body = MessageIn.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiProblem(
            422,
            "invalid-input",
            first["msg"],
            field=".".join(str(p) for p in first["loc"]) or None,
        ) from exc
    return body


def _check_metadata(metadata: dict[str, str]) -> None:
    """Metadata goes into headers: no CR, LF or NUL in it."""
    for k, v in metadata.items():
        if any(c in k + v for c in "\r\n\x00"):
            raise ApiProblem(
                422, "header-injection", "CR, LF or NUL in metadata", field=f"metadata.{k}"
            )


async def _accept(ctx: ApiContext, submission: Submission) -> str:
    """The new message's id; a refusal as the API's problem (503 with Retry-After when busy)."""
    try:
        return await ctx.services.acceptor.accept(submission)
    except Refusal as r:
        if r.http == 503:
            count(ctx, "admissions_refused")
            raise ApiProblem(503, "busy", r.text, headers={"Retry-After": "5"}) from r
        raise ApiProblem(
            r.http, "refused", f"{r.text} ({r.enhanced})", field=r.field or None
        ) from r


@router.get(
    "/v1/messages", response_model=MessagePage, responses=error_responses(401, 403, 422, 429)
)
async def list_messages(
    request: Request,
    who: Annotated[Caller, Depends(require("messages:read"))],
    status: Annotated[RecipientStatus | None, Query()] = None,
    recipient: Annotated[str | None, Query(max_length=254)] = None,
    since: Annotated[float | None, Query(description="Unix time")] = None,
    until: Annotated[float | None, Query(description="Unix time")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> MessagePage:
    ctx: ApiContext = request.app.state.ctx
    records = await ctx.services.store.list_messages(
        who.account.id,
        status=status.value if status else None,
        recipient=recipient,
        since=since,
        until=until,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page, more = records[:limit], len(records) > limit
    return MessagePage(
        items=[
            MessageSummary(
                id=r.id,
                from_=r.mail_from,
                created_at=r.created_at,
                finished_at=r.finished_at,
                recipients=_recipients(r),
            )
            for r in page
        ],
        next_cursor=encode_cursor(page[-1].id) if more and page else None,
    )


@router.get(
    "/v1/messages/{message_id}",
    response_model=MessageOut,
    responses=error_responses(401, 403, 404, 429),
)
async def get_message(
    request: Request, message_id: str, who: Annotated[Caller, Depends(require("messages:read"))]
) -> MessageOut:
    record = await _own_message(request.app.state.ctx, who, message_id)
    return MessageOut(
        id=record.id,
        from_=record.mail_from,
        size=record.size,
        message_id_header=record.message_id_header,
        subject=record.subject,
        created_at=record.created_at,
        finished_at=record.finished_at,
        metadata=record.api_metadata or {},
        recipients=_recipients(record),
        attempts=[
            AttemptOut(
                at=a.at,
                domain=a.domain,
                mx=a.mx,
                ip=a.ip,
                route=a.route_method,
                policy=a.policy,
                tls_version=a.tls_version,
                cipher=a.cipher,
                cert_fingerprint=a.cert_fingerprint,
                outcome=a.outcome,
                reply=a.reply,
            )
            for a in record.attempts
        ],
        events=[
            EventOut(at=e.at, recipient=e.recipient, kind=e.kind, detail=e.detail)
            for e in record.events
        ],
    )


@router.get(
    "/v1/messages/{message_id}/evidence/{recipient}",
    response_model=EvidenceOut,
    responses=error_responses(401, 403, 404, 429),
)
async def get_evidence(
    request: Request,
    message_id: str,
    recipient: str,
    who: Annotated[Caller, Depends(require("messages:read"))],
) -> EvidenceOut:
    ctx: ApiContext = request.app.state.ctx
    await _own_message(ctx, who, message_id)
    rows = await ctx.services.signing.evidence(message_id, recipient)
    if not rows:
        raise ApiProblem(404, "not-found", f"no delivery evidence for {recipient} (not delivered?)")
    jwk = ctx.services.evidence_key.public_jwk()
    try:
        record = verify_evidence(rows[0].token, jwk)
    except EvidenceError as exc:
        raise ApiProblem(500, "internal", f"stored evidence does not verify: {exc}") from exc
    signed_recipient = record.get("recipient")
    if record.get("message_id") != message_id or not isinstance(signed_recipient, str):
        raise ApiProblem(500, "internal", "stored evidence does not belong to this message")
    # Every readable field comes from the signed payload, never from the request.
    return EvidenceOut(
        message_id=message_id,
        recipient=signed_recipient,
        token=rows[0].token,
        record=record,
        public_key=jwk,
    )
