"""The API application and its HTTPS listeners (uvicorn inside the gateway's event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException

from secumail import __version__
from secumail.api import problems
from secumail.api.body_limit import BodyLimit, body_bound
from secumail.api.context import ApiContext
from secumail.api.docs_page import add_docs
from secumail.api.models import MessageIn
from secumail.api.routes_admin import router as admin_router
from secumail.api.routes_gdpr import router as gdpr_router
from secumail.api.routes_messages import router as messages_router
from secumail.api.routes_ops import router as ops_router
from secumail.api.tls_scope import TlsScopeH11Protocol
from secumail.errors import ConfigError, ListenError
from secumail.mail.endpoints import parse_host_port
from secumail.net.tls import server_context

log = logging.getLogger("secumail.api")

DESCRIPTION = """Send mail that is delivered over an encrypted, authenticated route — or not
at all — and learn why. Authenticate with OAuth 2 client credentials at `/oauth/token`
(scopes: messages:send, messages:read, domains:manage, webhooks:manage,
suppressions:manage) and send the access token as `Authorization: Bearer …`. Errors are
RFC 9457 problem documents."""


def _tls_factory(
    cert_file: Path, key_file: Path
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def make(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = server_context(cert_file, key_file)
        context.set_alpn_protocols(["http/1.1"])
        return context

    return make


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Secumail API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # add_docs: Swagger UI from this origin, not a CDN
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.add_middleware(BodyLimit, max_body=body_bound(ctx.settings.submission.max_message_size))
    app.add_exception_handler(problems.ApiProblem, problems.on_api_problem)
    app.add_exception_handler(RequestValidationError, problems.on_validation)
    app.add_exception_handler(StarletteHTTPException, problems.on_http)
    app.add_exception_handler(Exception, problems.on_unexpected)
    app.include_router(ops_router)
    app.include_router(messages_router)
    app.include_router(admin_router)
    app.include_router(gdpr_router)
    add_docs(app, "/docs")

    def openapi() -> dict[str, Any]:
        # The send endpoint reads its body itself (JSON or MIME); publish its JSON schema.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            extra = MessageIn.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components.update(extra.pop("$defs", {}))
            components["MessageIn"] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class ApiServer:
    """One uvicorn server per `api.listen` address, served in the running loop."""

    def __init__(
        self,
        app: FastAPI,
        listen: list[str],
        *,
        cert_file: Any,
        key_file: Any,
        plain_http: bool,
        reuse_port: bool = False,
    ) -> None:
        self.reuse_port = reuse_port
        self.servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        for entry in listen:
            try:
                host, port = parse_host_port(entry)
            except ValueError as exc:
                raise ListenError(entry, str(exc)) from exc
            if plain_http and not (host.startswith("127.") or host in ("::1", "localhost")):
                raise ConfigError(f"api.plain_http is allowed on loopback only, not {entry}")
            # The API's TLS is the SMTP listeners' (net/tls.server_context): same versions,
            # suites and groups, never uvicorn's defaults.
            tls_factory = None if plain_http else _tls_factory(cert_file, key_file)
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                log_config=None,  # uvicorn's lines go to the gateway's logfmt handler
                access_log=False,
                lifespan="off",
                server_header=False,
                proxy_headers=False,
                timeout_graceful_shutdown=3,  # idle TLS keep-alives must not hold up SIGTERM
                ssl_context_factory=tls_factory,
                # h11 (as uvicorn's "auto" picks without httptools), with the connection's
                # TLS in each request's scope (api/tls_scope.py).
                http=TlsScopeH11Protocol,
            )
            self.servers.append(uvicorn.Server(config))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            # Server._serve: serve() would take over SIGTERM/SIGINT, which the gateway owns.
            self._tasks.append(
                loop.create_task(server._serve(sockets=[self._socket(server.config)]))
            )
        for server in self.servers:
            while not server.started:
                if any(t.done() for t in self._tasks):
                    for t in self._tasks:
                        if t.done() and t.exception():
                            raise ConfigError(f"cannot start the API: {t.exception()}")
                    raise ConfigError("cannot start the API (see the log)")
                await asyncio.sleep(0.02)

    def _socket(self, config: uvicorn.Config) -> socket.socket:
        """The listening socket, made here so worker processes can share the port."""
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sock.close()
            host = f"[{config.host}]" if ":" in config.host else config.host
            raise ListenError.from_os_error(f"{host}:{config.port}", exc) from exc
        sock.listen(1024)
        return sock

    async def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
