"""`/v1/gdpr/export`, `/v1/gdpr/erase`: a person's records and their erasure, for operators.

Operator-only: the token needs the scope `operator:gdpr`, which a credential has only when
it was created with it by name (`credential create ACCOUNT --kind api --scope
operator:gdpr`); it is never among the default scopes, nor granted to OIDC tokens. The
address travels in the request body (POST), so it lands in no URL or access log.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from secumail.api.context import ApiContext, Caller, require
from secumail.api.problems import ApiProblem, error_responses
from secumail.errors import ConflictError
from secumail.mail.address import AddressError, parse_address
from secumail.store.audit_chain import AuditKind

GDPR_SCOPE = "operator:gdpr"
OPERATOR_SCOPES = (GDPR_SCOPE,)

router = APIRouter()


class PersonIn(BaseModel):
    address: str = Field(max_length=320, description="the person's e-mail address")


class PersonalDataOut(BaseModel):
    address: str
    exported_at: float
    records: dict[str, list[dict[str, Any]]] = Field(
        description="per table, every record naming the address"
    )


class ErasureOut(BaseModel):
    pseudonym: str
    removed: dict[str, int]
    pseudonymised: dict[str, int]
    audit_seq: int | None
    wal_cleared: bool = Field(
        description="the old pages also left the database's write-ahead log (else retry later)"
    )


def api_actor(who: Caller) -> str:
    return f"api:{who.principal.client_id}"


def _person(text: str) -> str:
    try:
        return str(parse_address(text.strip(), utf8=not text.isascii())).lower()
    except AddressError as exc:
        raise ApiProblem(422, "invalid-address", str(exc), field="address") from exc


@router.post(
    "/v1/gdpr/export",
    response_model=PersonalDataOut,
    tags=["gdpr"],
    responses=error_responses(400, 401, 403, 422, 429),
)
async def export_person(
    request: Request, body: PersonIn, who: Annotated[Caller, Depends(require(GDPR_SCOPE))]
) -> PersonalDataOut:
    """Every record naming the address (GDPR Art. 15), as the operator hands it over."""
    ctx: ApiContext = request.app.state.ctx
    address = _person(body.address)
    records = await ctx.services.personal_data.export(address)
    await ctx.services.audit.record(
        api_actor(who),
        AuditKind.GDPR_EXPORTED,
        address,
        {"records": {t: len(rows) for t, rows in records.items() if rows}},
    )
    return PersonalDataOut(address=address, exported_at=time.time(), records=records)


@router.post(
    "/v1/gdpr/erase",
    response_model=ErasureOut,
    tags=["gdpr"],
    responses=error_responses(400, 401, 403, 409, 422, 429),
)
async def erase_person(
    request: Request, body: PersonIn, who: Annotated[Caller, Depends(require(GDPR_SCOPE))]
) -> ErasureOut:
    """Remove or pseudonymise every record naming the address (GDPR Art. 17); 409 while a
    message from or to it is still in delivery."""
    ctx: ApiContext = request.app.state.ctx
    address = _person(body.address)
    try:
        report = await ctx.services.personal_data.erase(address, api_actor(who))
    except ConflictError as exc:
        raise ApiProblem(409, "erasure-blocked", str(exc), field="address") from exc
    return ErasureOut(
        pseudonym=report.pseudonym,
        removed=report.removed,
        pseudonymised=report.pseudonymised,
        audit_seq=report.audit.seq if report.audit else None,
        wal_cleared=report.wal_cleared,
    )
