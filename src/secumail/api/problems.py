"""Errors as RFC 9457 problem documents: a stable `type`, a human `detail`, the field."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

TYPE_BASE = "https://secumail.example/problems/"
MEDIA = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(BaseModel):
    """RFC 9457 §3.1 members, plus `field` naming the input at fault."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.field, self.headers = (
            status,
            kind,
            detail,
            field,
            headers,
        )


def problem_response(
    status: int,
    kind: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


async def on_api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc.status, exc.kind, exc.detail, exc.field, exc.headers)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return problem_response(
        422, "invalid-input", str(first.get("msg", "invalid input")), ".".join(loc) or None
    )


async def on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(
        exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None)
    )


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    import logging

    logging.getLogger("secumail.api").exception(
        "unexpected error on %s %s", request.method, request.url.path
    )
    return problem_response(500, "internal", "An internal error occurred; it has been logged.")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem bodies."""
    return {
        c: {
            "model": Problem,
            "description": TITLES.get(c, "Error"),
            "content": {MEDIA: {"schema": Problem.model_json_schema()}},
        }
        for c in codes
    }
