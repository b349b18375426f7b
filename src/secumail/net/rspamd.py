"""rspamd's HTTP protocol: `POST /checkv2` with the message as the body.

What rspamd needs to judge the message comes as request headers (its protocol
documentation, "HTTP headers"): the sender's IP, the HELO name, the envelope sender and
recipients, the authenticated user and the queue id. The answer is read by
`mail.scan_result.parse_rspamd_reply`. Anything but a readable answer in time is
`ScannerUnavailable`: the message waits, it is never taken as scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from secumail.errors import ScannerUnavailable
from secumail.mail.scan_result import ScanReplyError, ScanResult, parse_rspamd_reply

MAX_REPLY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpamContext:
    """The envelope facts rspamd scores on (all optional)."""

    queue_id: str = ""
    client_ip: str = ""
    helo: str = ""
    mail_from: str = ""
    recipients: Sequence[str] = ()
    user: str = ""


def _header_safe(value: str) -> str:
    return "".join(c for c in value if c.isprintable() and c.isascii())[:512]


class RspamdClient:
    engine = "rspamd"

    def __init__(self, url: str, *, timeout: float, reject_score: float | None) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self.reject_score = reject_score
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def scan(self, data: bytes, context: SpamContext = SpamContext()) -> ScanResult:
        headers = {"Queue-Id": context.queue_id, "IP": context.client_ip, "Helo": context.helo}
        headers |= {"From": context.mail_from, "User": context.user}
        pairs = [(k, _header_safe(v)) for k, v in headers.items() if v]
        pairs += [("Rcpt", _header_safe(r)) for r in context.recipients[:100]]
        try:
            response = await self._client.post(self.url, content=data, headers=pairs)
        except httpx.TimeoutException:
            raise ScannerUnavailable(self.engine, f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ScannerUnavailable(self.engine, f"{self.url}: {exc}") from None
        if response.status_code != 200:
            raise ScannerUnavailable(self.engine, f"HTTP {response.status_code}")
        try:
            return parse_rspamd_reply(response.content[:MAX_REPLY], reject_score=self.reject_score)
        except ScanReplyError as exc:
            raise ScannerUnavailable(self.engine, str(exc)) from None
