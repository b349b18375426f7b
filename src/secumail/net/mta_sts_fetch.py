"""Fetch an MTA-STS policy over HTTPS (RFC 8461 §3.3): the I/O edge of `mail.mta_sts`.

A deliberately small HTTP/1.1 client on asyncio streams and the standard `ssl` module:
one ``GET /.well-known/mta-sts.txt`` to ``mta-sts.<domain>`` with ``Connection: close``.

- The certificate must verify (PKIX) for the host name ``mta-sts.<domain>`` with the
  caller's context, whatever address is connected to (§3.3); otherwise
  ``sts-webpki-invalid``.
- Redirects are not followed (§3.3) and any status but 200 is an error
  (``sts-policy-fetch-error``), as are refused connections and the total ``timeout``.
- The body must be ``text/plain`` (§3.2, parameters allowed), at most 64 KiB (§3.3),
  UTF-8, and a valid policy; otherwise ``sts-policy-invalid``.

Every failure is a `StsFetchError` carrying its RFC 8460 result type for TLS reports.
"""

from __future__ import annotations

import asyncio
import re
import ssl

from secumail.mail.address import AddressError
from secumail.mail.mta_sts import (
    POLICY_MAX_BYTES,
    WELL_KNOWN_PATH,
    StsError,
    StsPolicy,
    parse_policy,
    policy_host,
)
from secumail.mail.tlsrpt import ResultType

DEFAULT_TIMEOUT = 60.0  # §3.3: senders may limit the fetch to about a minute
HEAD_MAX_BYTES = 32 * 1024
LINE_MAX_BYTES = 8 * 1024
_STATUS_LINE = re.compile(r"HTTP/1\.[01] ([0-9]{3})(?: .*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")


class StsFetchError(StsError):
    """The policy could not be fetched or was refused; ``status`` is the HTTP status if any."""

    def __init__(
        self,
        reason: str,
        result_type: ResultType = ResultType.STS_POLICY_FETCH_ERROR,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(reason, result_type)
        self.status = status


async def fetch_policy(
    domain: str,
    *,
    ssl_context: ssl.SSLContext,
    port: int = 443,
    timeout: float = DEFAULT_TIMEOUT,
    connect_to: tuple[str, int] | None = None,
    policy_id: str | None = None,
) -> StsPolicy:
    """Fetch and parse the policy of ``domain``.

    ``connect_to`` is an (address, port) the caller resolved itself; the certificate is
    still checked against ``mta-sts.<domain>``. ``port`` (setting ``mta_sts.port``) is used
    when connecting by name. ``policy_id`` is the TXT record's id, kept on the policy.
    """
    if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
        raise ValueError("MTA-STS needs a context that verifies certificates and host names")
    try:
        host = policy_host(domain)
    except AddressError as exc:
        raise StsFetchError(f"cannot fetch an MTA-STS policy for {domain!r}: {exc}") from exc
    address, real_port = connect_to if connect_to is not None else (host, port)
    try:
        async with asyncio.timeout(timeout):
            body = await _get(host, address, real_port, ssl_context)
    except TimeoutError:
        raise StsFetchError(f"{host}: no complete answer within {timeout:g} s") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise StsFetchError(
            f"{host}: the policy is not UTF-8", ResultType.STS_POLICY_INVALID
        ) from None
    try:
        return parse_policy(text, policy_id=policy_id)
    except StsError as exc:
        raise StsFetchError(f"{host}: {exc.reason}", exc.result_type) from exc


async def _get(host: str, address: str, port: int, ctx: ssl.SSLContext) -> bytes:
    try:
        reader, writer = await asyncio.open_connection(
            address, port, ssl=ctx, server_hostname=host, limit=LINE_MAX_BYTES
        )
    except ssl.SSLCertVerificationError as exc:
        raise StsFetchError(
            f"{host}: certificate not valid: {exc.verify_message or exc}",
            ResultType.STS_WEBPKI_INVALID,
        ) from exc
    except ssl.SSLError as exc:
        raise StsFetchError(f"{host}: TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise StsFetchError(f"{host}: cannot connect to {address} port {port}: {exc}") from exc
    host_header = host if port == 443 else f"{host}:{port}"
    request = (
        f"GET {WELL_KNOWN_PATH} HTTP/1.1\r\nHost: {host_header}\r\n"
        "User-Agent: secumail\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    try:
        writer.write(request.encode("ascii"))
        await writer.drain()
        status, headers = await _read_head(reader, host)
        _check_head(host, status, headers)
        return await _read_body(reader, headers, host)
    except (ssl.SSLError, OSError) as exc:
        raise StsFetchError(f"{host}: connection failed: {exc}") from exc
    except asyncio.IncompleteReadError as exc:
        raise StsFetchError(f"{host}: the server closed the connection early") from exc
    except ValueError as exc:  # a line over the reader's limit
        raise StsFetchError(f"{host}: malformed HTTP response: {exc}") from exc
    finally:
        writer.transport.abort()  # the whole response is read, or we give up on it


async def _read_head(reader: asyncio.StreamReader, host: str) -> tuple[int, dict[str, list[str]]]:
    total = 0
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        total += len(raw)
        if not raw.endswith(b"\n") or total > HEAD_MAX_BYTES:
            raise StsFetchError(f"{host}: truncated or oversized HTTP response head")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if not line:
            break
        lines.append(line)
    status_line = _STATUS_LINE.fullmatch(lines[0]) if lines else None
    if status_line is None:
        raise StsFetchError(f"{host}: not an HTTP/1.x response")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        match = _HEADER.fullmatch(line)
        if match is None:
            raise StsFetchError(f"{host}: malformed header line {line[:60]!r}")
        headers.setdefault(match.group(1).lower(), []).append(match.group(2))
    return int(status_line.group(1)), headers


def _check_head(host: str, status: int, headers: dict[str, list[str]]) -> None:
    if 300 <= status < 400:
        where = headers.get("location", ["?"])[0]
        raise StsFetchError(
            f"{host}: redirect to {where} not followed (RFC 8461 §3.3)", status=status
        )
    if status != 200:
        raise StsFetchError(f"{host}: HTTP status {status}, 200 required", status=status)
    content_type = headers.get("content-type", [""])
    media_type = content_type[0].split(";", 1)[0].strip().lower()
    if len(content_type) != 1 or media_type != "text/plain":  # §3.2
        raise StsFetchError(
            f"{host}: Content-Type {', '.join(content_type) or '(none)'}, text/plain required",
            ResultType.STS_POLICY_INVALID,
            status=status,
        )
    encoding = [v.strip().lower() for v in headers.get("content-encoding", [])]
    if any(v != "identity" for v in encoding):
        raise StsFetchError(f"{host}: Content-Encoding {encoding} not asked for", status=status)


def _too_big(host: str) -> StsFetchError:
    return StsFetchError(
        f"{host}: policy larger than {POLICY_MAX_BYTES} bytes (RFC 8461 §3.3)",
        ResultType.STS_POLICY_INVALID,
        status=200,
    )


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, list[str]], host: str
) -> bytes:
    codings = [
        c.strip().lower() for v in headers.get("transfer-encoding", []) for c in v.split(",")
    ]
    if codings:
        if codings != ["chunked"]:
            raise StsFetchError(f"{host}: unsupported Transfer-Encoding {codings}")
        return await _read_chunked(reader, host)
    lengths = {v.strip() for v in headers.get("content-length", [])}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise StsFetchError(f"{host}: bad Content-Length {sorted(lengths)}")
        length = int(next(iter(lengths)))
        if length > POLICY_MAX_BYTES:
            raise _too_big(host)
        return await reader.readexactly(length)
    body = await reader.read(POLICY_MAX_BYTES + 1)  # until the server closes
    while len(body) <= POLICY_MAX_BYTES and (
        more := await reader.read(POLICY_MAX_BYTES + 1 - len(body))
    ):
        body += more
    if len(body) > POLICY_MAX_BYTES:
        raise _too_big(host)
    return body


async def _read_chunked(reader: asyncio.StreamReader, host: str) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readline()).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_line):
            raise StsFetchError(f"{host}: bad chunk size {size_line[:20]!r}")
        size = int(size_line, 16)
        if size == 0:
            break
        if len(body) + size > POLICY_MAX_BYTES:
            raise _too_big(host)
        body += await reader.readexactly(size)
        if (await reader.readexactly(2)) != b"\r\n":
            raise StsFetchError(f"{host}: chunk not followed by CRLF")
    while (await reader.readline()).strip():  # trailer fields, up to the empty line
        pass
    return bytes(body)
