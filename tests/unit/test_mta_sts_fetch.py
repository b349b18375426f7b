"""Fetching MTA-STS policies over HTTPS (RFC 8461 §3.2, §3.3) from a real HTTPS server on
loopback (`tests.harness.https.HttpsServer`) with certificates from the harness CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from secumail.mail.mta_sts import StsMode, StsPolicy
from secumail.net.mta_sts_fetch import StsFetchError, fetch_policy
from secumail.net.tls import verifying_client_context
from tests.harness.https import MTA_STS_PATH, HttpsServer, Route
from tests.harness.pki import TestCA

IP = "127.0.0.3"
DOMAIN = "example.test"
POLICY_HOST = "mta-sts.example.test"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.mx.example.test\r\nmax_age: 86400\r\n"
EXPECTED = StsPolicy(StsMode.ENFORCE, ("mx1.example.test", "*.mx.example.test"), 86400)


@pytest.fixture
def client_ctx(test_ca: TestCA) -> ssl.SSLContext:
    return verifying_client_context(test_ca.ca_file)


@pytest.fixture
def server(test_ca: TestCA) -> Iterator[HttpsServer]:
    with HttpsServer(IP, 0, test_ca.issue(POLICY_HOST)) as https:
        yield https


def fetch(server: HttpsServer, ctx: ssl.SSLContext, **kwargs: Any) -> StsPolicy:
    kwargs.setdefault("timeout", 5.0)
    return asyncio.run(
        fetch_policy(DOMAIN, ssl_context=ctx, connect_to=(server.host, server.port), **kwargs)
    )


def fetch_error(server: HttpsServer, ctx: ssl.SSLContext, **kwargs: Any) -> StsFetchError:
    with pytest.raises(StsFetchError) as info:
        fetch(server, ctx, **kwargs)
    return info.value


# --- what a good server serves ---------------------------------------------------------


def test_policy_fetched(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    server.set_policy(POLICY)
    assert fetch(server, client_ctx, policy_id="20240101") == StsPolicy(
        EXPECTED.mode, EXPECTED.mx_patterns, EXPECTED.max_age, "20240101"
    )
    [request] = server.requests
    # §3.3: GET of the well-known path, SNI and Host name the policy host
    assert (request.method, request.path) == ("GET", "/.well-known/mta-sts.txt")
    assert request.sni == POLICY_HOST
    assert request.headers["host"] == f"{POLICY_HOST}:{server.port}"
    assert request.headers["connection"] == "close"


@pytest.mark.parametrize(
    "content_type", ["text/plain; charset=utf-8", "TEXT/PLAIN", "text/plain;charset=us-ascii"]
)
def test_text_plain_with_parameters(
    server: HttpsServer, client_ctx: ssl.SSLContext, content_type: str
) -> None:
    """§3.2: the policy is text/plain; media type parameters are allowed."""
    server.set_route(MTA_STS_PATH, 200, {"Content-Type": content_type}, POLICY)
    assert fetch(server, client_ctx) == EXPECTED


def test_chunked_body(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    body = (POLICY + "".join(f"ext{i}: {'x' * 100}\r\n" for i in range(30))).encode()
    server.route(MTA_STS_PATH, Route(body=body, chunked=True))
    assert fetch(server, client_ctx) == EXPECTED


def test_body_until_close(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        + POLICY.encode()
    )
    server.route(MTA_STS_PATH, Route(raw=raw))
    assert fetch(server, client_ctx) == EXPECTED


def test_policy_of_exactly_64_kib(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    filler = 65536 - len(POLICY) - len("pad: \n")
    body = POLICY + "pad: " + "x" * filler + "\n"
    assert len(body.encode()) == 65536
    server.set_policy(body)
    assert fetch(server, client_ctx) == EXPECTED


def test_connect_by_name_on_the_configured_port(
    server: HttpsServer, client_ctx: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``connect_to`` the policy host is resolved and ``port`` (setting
    ``mta_sts.port``) is used; the name is answered here without any DNS traffic."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        assert host == POLICY_HOST
        return real(IP, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    server.set_policy(POLICY)
    policy = asyncio.run(fetch_policy(DOMAIN, ssl_context=client_ctx, port=server.port, timeout=5))
    assert policy == EXPECTED


# --- §3.3: refused answers -------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_not_followed(
    server: HttpsServer, client_ctx: ssl.SSLContext, status: int
) -> None:
    """§3.3: "HTTP 3xx redirects MUST NOT be followed"."""
    server.set_route(MTA_STS_PATH, status, {"Location": f"https://{POLICY_HOST}/elsewhere"})
    server.set_route("/elsewhere", 200, {"Content-Type": "text/plain"}, POLICY)
    error = fetch_error(server, client_ctx)
    assert (error.result_type, error.status) == ("sts-policy-fetch-error", status)
    assert "redirect" in error.reason
    assert [r.path for r in server.requests] == [MTA_STS_PATH]


@pytest.mark.parametrize("status", [404, 500, 204, 201])
def test_status_must_be_200(server: HttpsServer, client_ctx: ssl.SSLContext, status: int) -> None:
    server.set_route(
        MTA_STS_PATH, status, {"Content-Type": "text/plain"}, POLICY if status != 204 else ""
    )
    error = fetch_error(server, client_ctx)
    assert (error.result_type, error.status) == ("sts-policy-fetch-error", status)


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/html"}, {"Content-Type": "application/octet-stream"}, {}],
)
def test_content_type_must_be_text_plain(
    server: HttpsServer, client_ctx: ssl.SSLContext, headers: dict[str, str]
) -> None:
    server.set_route(MTA_STS_PATH, 200, headers, POLICY)
    error = fetch_error(server, client_ctx)
    assert error.result_type == "sts-policy-invalid"
    assert "text/plain required" in error.reason


@pytest.mark.parametrize("how", ["content-length", "chunked", "until-close"])
def test_body_over_64_kib_refused(
    server: HttpsServer, client_ctx: ssl.SSLContext, how: str
) -> None:
    """§3.3: senders may cap the policy at 64 KiB; a byte more is refused."""
    body = (POLICY + "pad: " + "x" * 65536 + "\n").encode()
    if how == "until-close":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        server.route(MTA_STS_PATH, Route(raw=head + body))
    else:
        server.route(MTA_STS_PATH, Route(body=body, chunked=how == "chunked"))
    error = fetch_error(server, client_ctx)
    assert error.result_type == "sts-policy-invalid"
    assert "65536" in error.reason


def test_invalid_policy_body(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    server.set_policy("version: STSv1\nmode: enforce\nmax_age: 86400\n")  # no mx
    error = fetch_error(server, client_ctx)
    assert error.result_type == "sts-policy-invalid"
    assert "no mx" in error.reason


def test_body_not_utf8(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    server.route(MTA_STS_PATH, Route(body=POLICY.encode() + b"x: \xff\xfe\n"))
    assert fetch_error(server, client_ctx).result_type == "sts-policy-invalid"


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\nversion: STSv1\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",  # closed inside the head
        b"",  # closed without a word
    ],
)
def test_malformed_responses(server: HttpsServer, client_ctx: ssl.SSLContext, raw: bytes) -> None:
    server.route(MTA_STS_PATH, Route(raw=raw))
    error = fetch_error(server, client_ctx)
    assert error.result_type == "sts-policy-fetch-error"


def test_huge_header_refused(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    server.set_route(
        MTA_STS_PATH, 200, {"Content-Type": "text/plain", "X-Big": "y" * 20000}, POLICY
    )
    assert fetch_error(server, client_ctx).result_type == "sts-policy-fetch-error"


# --- §3.3: the certificate must be valid for mta-sts.<domain> (PKIX) -------------------


@pytest.mark.parametrize(
    "kind", ["wrong-name", "expired", "self-signed", "not-yet-valid", "parent-wildcard"]
)
def test_certificate_problems_are_webpki_invalid(
    test_ca: TestCA, client_ctx: ssl.SSLContext, kind: str
) -> None:
    cert = {
        "wrong-name": lambda: test_ca.issue("mta-sts.other.test"),
        "expired": lambda: test_ca.issue(POLICY_HOST, expired=True),
        "self-signed": lambda: test_ca.self_signed(POLICY_HOST),
        "not-yet-valid": lambda: test_ca.issue(POLICY_HOST, not_yet_valid=True),
        "parent-wildcard": lambda: test_ca.issue("*.test"),  # one label only: no match
    }[kind]()
    with HttpsServer(IP, 0, cert) as https:
        https.set_policy(POLICY)
        error = fetch_error(https, client_ctx)
        assert error.result_type == "sts-webpki-invalid"
        assert https.requests == []  # nothing was asked over an untrusted connection


def test_wildcard_certificate_accepted(test_ca: TestCA, client_ctx: ssl.SSLContext) -> None:
    with HttpsServer(IP, 0, test_ca.issue("*.example.test")) as https:
        https.set_policy(POLICY)
        assert fetch(https, client_ctx) == EXPECTED


def test_certificate_chosen_by_sni(test_ca: TestCA, client_ctx: ssl.SSLContext) -> None:
    """The harness serves several policy hosts from one address, by SNI and Host."""
    with HttpsServer(IP, 0, test_ca.issue("default.invalid")) as https:
        https.add_certificate(POLICY_HOST, test_ca.issue(POLICY_HOST))
        https.set_policy(POLICY, host=POLICY_HOST)
        https.set_policy("version: STSv1\nmode: none\nmax_age: 1\n", host="mta-sts.other.test")
        assert fetch(https, client_ctx) == EXPECTED
        assert https.requests[0].host == POLICY_HOST


def test_context_must_verify(server: HttpsServer) -> None:
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verifies"):
        fetch(server, lax)


# --- the total timeout and failures to connect -----------------------------------------


def test_slow_server_times_out(server: HttpsServer, client_ctx: ssl.SSLContext) -> None:
    server.set_policy(POLICY, delay=3.0)
    started = time.monotonic()
    error = fetch_error(server, client_ctx, timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert error.result_type == "sts-policy-fetch-error"
    assert "within 0.5 s" in error.reason


def test_silent_listener_times_out_in_the_handshake(client_ctx: ssl.SSLContext) -> None:
    """A TCP listener that never speaks TLS: the total timeout covers the handshake."""
    with socket.socket() as listener:
        listener.bind((IP, 0))
        listener.listen(1)
        started = time.monotonic()
        with pytest.raises(StsFetchError, match="within") as info:
            asyncio.run(
                fetch_policy(
                    DOMAIN, ssl_context=client_ctx, connect_to=listener.getsockname(), timeout=0.5
                )
            )
        assert time.monotonic() - started < 2.0
        assert info.value.result_type == "sts-policy-fetch-error"


def test_connection_refused(client_ctx: ssl.SSLContext) -> None:
    with socket.socket() as probe:
        probe.bind((IP, 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(StsFetchError, match="cannot connect") as info:
            asyncio.run(
                fetch_policy(DOMAIN, ssl_context=client_ctx, connect_to=(IP, port), timeout=5)
            )
    assert info.value.result_type == "sts-policy-fetch-error"


def test_invalid_domain(client_ctx: ssl.SSLContext) -> None:
    with pytest.raises(StsFetchError) as info:
        asyncio.run(fetch_policy("not a domain", ssl_context=client_ctx, connect_to=(IP, 1)))
    assert info.value.result_type == "sts-policy-fetch-error"
