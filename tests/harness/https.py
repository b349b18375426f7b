"""An HTTPS server for the fake internet: MTA-STS policies (RFC 8461 §3.3) and the like.

`HttpsServer` listens on one 127.0.0.x address and port with a certificate from the
harness CA and answers ``GET``/``POST`` from a table of routes set by the test:
``path`` (or ``(host, path)`` for one virtual host) → `Route` (status, headers, body).
A route can answer slowly (``delay``), send raw bytes instead of a formed response
(``raw``), or stream its body chunked. Several certificates can be served by SNI
(`add_certificate`) so one server hosts the policies of many test domains. Every request
is kept in ``requests`` (method, path, headers, SNI name, client address).

It runs on its own loop in a background thread (`tests.harness.LoopThread`), like the
harness MX, and is usable as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http import HTTPStatus

from tests.harness import check_loopback
from tests.harness.pki import CertPair
from tests.harness.server import LoopServer, tcp_listener

MTA_STS_PATH = "/.well-known/mta-sts.txt"
HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Route:
    """One answer. ``headers`` are sent as given, plus Content-Length unless chunked."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "text/plain"),)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    raw: bytes | None = None  # sent verbatim instead of a formed response
    chunked: bool = False  # Transfer-Encoding: chunked, 1 KiB chunks


@dataclass
class Request:
    """One request the server read (the body of a POST is kept, up to 1 MiB)."""

    method: str
    path: str
    headers: dict[str, str]
    sni: str | None
    client_ip: str
    body: bytes = b""
    host: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.host = self.headers.get("host", "").rsplit(":", 1)[0].lower()


def _context(cert: CertPair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.chain_file or cert.cert_file, cert.key_file)
    return ctx


class HttpsServer(LoopServer):
    """HTTPS on ``host:port`` (port 0: any free port, see `port`) serving ``cert``."""

    def __init__(self, host: str, port: int, cert: CertPair) -> None:
        check_loopback(host)
        super().__init__(f"harness-https-{host}", host, port)
        self.requests: list[Request] = []
        self._routes: dict[tuple[str | None, str], Route] = {}
        self._lock = threading.Lock()
        self._ctx = _context(cert)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._sni: dict[int, str | None] = {}
        self._ctx.sni_callback = self._pick_certificate
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- test controls (thread-safe) ---------------------------------------

    def route(self, path: str, route: Route, *, host: str | None = None) -> None:
        """Answer requests for ``path`` (on virtual ``host`` only, when given)."""
        with self._lock:
            self._routes[(host.lower() if host else None, path)] = route

    def set_route(
        self,
        path: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
        *,
        host: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """`route` in one call: ``set_route("/x", 301, {"Location": "https://..."})``."""
        data = body.encode() if isinstance(body, str) else body
        pairs = tuple((headers if headers is not None else {"Content-Type": "text/plain"}).items())
        self.route(path, Route(status, pairs, data, delay), host=host)

    def set_policy(self, policy: str, *, host: str | None = None, delay: float = 0.0) -> None:
        """Serve ``policy`` as an MTA-STS policy (200, text/plain) at the well-known path."""
        self.set_route(
            MTA_STS_PATH, 200, {"Content-Type": "text/plain"}, policy, host=host, delay=delay
        )

    def add_certificate(self, server_name: str, cert: CertPair) -> None:
        """Serve ``cert`` to clients asking for ``server_name`` by SNI."""
        with self._lock:
            self._by_name[server_name.lower().rstrip(".")] = _context(cert)

    def clear(self) -> None:
        """Forget routes and the request log."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()

    def url(self, path: str = "/") -> str:
        return f"https://{self.host}:{self._port}{path}"

    # -- lifecycle ---------------------------------------------------------

    def _bind(self) -> tuple[socket.socket, ...]:
        return (tcp_listener(self.host, self._port, 64),)

    async def _listen(self, *sockets: socket.socket) -> None:
        (sock,) = sockets
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_tls_failures)
        self._server = await asyncio.start_server(
            self._serve, sock=sock, ssl=self._ctx, limit=HEAD_LIMIT
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- serving -----------------------------------------------------------

    def _pick_certificate(
        self, ssl_obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        self._sni[id(ssl_obj)] = server_name
        with self._lock:
            chosen = self._by_name.get((server_name or "").lower())
        if chosen is not None:
            ssl_obj.context = chosen

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ssl_obj = writer.get_extra_info("ssl_object")
        try:
            request = await self._read_request(reader, writer)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
                route = self._routes.get((request.host, request.path)) or self._routes.get(
                    (None, request.path)
                )
            await self._answer(writer, route or Route(404, body=b"not found\n"))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            self._sni.pop(id(ssl_obj), None)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if method == "POST" and headers.get("content-length", "").isdigit():
            body = await reader.readexactly(min(int(headers["content-length"]), 1 << 20))
        ssl_obj = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername") or ("", 0)
        return Request(method, path, headers, self._sni.get(id(ssl_obj)), peer[0], body)

    async def _answer(self, writer: asyncio.StreamWriter, route: Route) -> None:
        if route.delay:
            await asyncio.sleep(route.delay)
        if route.raw is not None:
            writer.write(route.raw)
            await writer.drain()
            return
        try:
            reason = HTTPStatus(route.status).phrase
        except ValueError:
            reason = "Status"
        head = [f"HTTP/1.1 {route.status} {reason}"]
        head += [f"{name}: {value}" for name, value in route.headers]
        if route.chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {len(route.body)}")
        head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if route.chunked:
            for start in range(0, len(route.body), 1024):
                chunk = route.body[start : start + 1024]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(route.body)
        await writer.drain()


def _quiet_tls_failures(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Refused handshakes (a client rejecting the certificate) are expected here."""
    if not isinstance(context.get("exception"), ssl.SSLError | ConnectionResetError):
        loop.default_exception_handler(context)
