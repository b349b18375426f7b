"""net/https_client.request: the whole answer is read (a server that writes in pieces),
plain HTTP only when the caller passes no TLS context (never chosen by a URL), and a
header value cannot add a line to the request."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from secumail.net.https_client import HttpsError, request

BODY = bytes(range(256)) * 800  # 200 KiB


async def pieces_server() -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY))
        for i in range(0, len(BODY), 7000):  # in pieces, with pauses between them
            writer.write(BODY[i : i + 7000])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_plain_http_reads_the_whole_answer() -> None:
    async def go() -> None:
        server, port, seen = await pieces_server()
        async with server:
            status, headers, body = await request(
                "POST", f"http://127.0.0.1:{port}/checkv2", ssl_context=None, timeout=10,
                body=b"x", headers=[("Rcpt", "a@b.test"), ("Rcpt", "c@d.test")],
            )
        assert status == 200 and body == BODY and headers["content-length"] == str(len(BODY))
        assert seen[0].count(b"\r\nRcpt: ") == 2  # a name may repeat

    asyncio.run(go())


def test_the_scheme_follows_the_callers_choice_not_the_url() -> None:
    async def go() -> None:
        with pytest.raises(HttpsError, match="not an http URL"):
            await request("GET", "https://127.0.0.1:1/", ssl_context=None, timeout=1)
        with pytest.raises(HttpsError, match="not an https URL"):
            await request("GET", "http://127.0.0.1:1/", ssl_context=ssl.create_default_context(), timeout=1)

    asyncio.run(go())


@pytest.mark.parametrize("value", ["x\r\nX-Injected: 1", "x\nY: 2", "x\0"])
def test_a_header_value_cannot_add_a_line(value: str) -> None:
    async def go() -> None:
        with pytest.raises(HttpsError, match="line break"):
            await request("GET", "http://127.0.0.1:1/", ssl_context=None, timeout=1, headers={"From": value})

    asyncio.run(go())
