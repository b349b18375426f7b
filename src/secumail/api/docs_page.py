"""`/docs`: Swagger UI served from the gateway itself, never from a CDN.

A gateway on a closed network (a hospital's) reaches no public host, so the page, its
script, style sheet and icon all come from this origin: the Swagger UI dist files that
the `fastapi-offline` package ships (a maintained bundle of Swagger UI 5, which renders
OpenAPI 3.1). The page carries a Content-Security-Policy that allows only this origin
(and the page's one inline start-up script, by its hash), so a browser fetches nothing
from elsewhere even if the bundle would try.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# name under /docs/assets/ → (file in fastapi_offline/static, media type)
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": ("favicon.png", "image/png"),
}
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _static_dir() -> Any:
    return files("fastapi_offline") / "static"


def _page_headers(html: str) -> dict[str, str]:
    """Only this origin; the page's inline start-up script allowed by its SHA-256
    (CSP Level 2 hash source), every other inline script refused."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {hashes}",
            # Swagger UI sets style attributes on its elements.
            "style-src 'self' 'unsafe-inline'",
            # the style sheet's icons are data: URIs
            "img-src 'self' data:",
            "connect-src 'self'",
            "font-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def add_docs(app: FastAPI, path: str = "/docs") -> None:
    """The Swagger UI page at `path` and its assets under `path`/assets/."""
    assert app.openapi_url is not None
    assets = f"{path}/assets"
    html_bytes = get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
        oauth2_redirect_url=None,
        # no badge that would send the schema to the public validator
        swagger_ui_parameters={"validatorUrl": None},
    ).body
    html = bytes(html_bytes).decode()
    headers = _page_headers(html)
    static = _static_dir()

    @app.get(path, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    @app.get(f"{assets}/{{name}}", include_in_schema=False)
    async def swagger_ui_asset(name: str) -> FileResponse:
        known = ASSETS.get(name)  # a fixed set of names: nothing else of the disk is served
        if known is None:
            raise StarletteHTTPException(404, f"no documentation asset {name}")
        filename, media_type = known
        return FileResponse(str(static / filename), media_type=media_type, headers=ASSET_HEADERS)
