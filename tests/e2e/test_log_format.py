"""Every log line is logfmt (`ts=… level=… logger=… msg="…"`), whoever writes it: the
gateway, the libraries inside it (uvicorn), and one-shot commands — never Python's raw
`WARNING:secumail.x:…` beside it, which log collectors cannot parse."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable

from tests.e2e.world import GatewayProcess

LOGFMT = re.compile(r'^ts=\S+Z level=(debug|info|warning|error|critical)( worker=\d+)? logger=\S+ msg="')


def not_logfmt(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not LOGFMT.match(line)]


def test_a_command_logs_in_logfmt(make_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = make_gateway()
    done = gateway.cli_process("route", "forget", "clinic.test")
    assert done.returncode == 0, done.stderr
    assert "operator cleared the route memory of clinic.test" in done.stderr
    assert not_logfmt(done.stderr) == [], done.stderr
    assert "level=warning logger=secumail." in done.stderr


def connect(port: int, timeout: float = 20.0) -> socket.socket:
    """A connection to the API, once it listens (the gateway starts it after SMTP)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_gateway_and_uvicorn_log_in_logfmt(gateway: GatewayProcess) -> None:
    # Not HTTP, inside TLS: uvicorn warns "Invalid HTTP request received."
    with connect(gateway.api_port) as raw, gateway.client_context().wrap_socket(raw) as tls:
        tls.sendall(b"\x01\x02 NOT HTTP\r\n\r\n")
        with contextlib.suppress(ssl.SSLError, OSError):
            tls.recv(1024)
    deadline = time.monotonic() + 10
    while "Invalid HTTP request" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = gateway.log()
    assert "Invalid HTTP request" in log, log[-3000:]
    assert "logger=uvicorn.error" in log
    assert not_logfmt(log) == [], log[-3000:]
