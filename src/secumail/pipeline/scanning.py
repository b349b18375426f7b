"""The virus and spam check of one message: content limits, then clamd, then rspamd.

Shared by the `scan` stage and, with `scan.inline`, by acceptance (SMTP DATA and the
API). The plaintext exists only in memory, as the stage unsealed it from the spool (or
as it was received); scanners get it over their sockets and nothing is written.

Order and short-cuts: the content limits first (`mail/content_limits.py`, cheap, and they
protect the scanners), then clamd, then rspamd — the first refusal ends the check (an
infected message needs no spam score). A scanner that cannot be asked raises
`ScannerUnavailable` to the caller, which makes the message wait (or, for an account that
allows it, lets it through marked unscanned); it is counted (`scan_unavailable:<engine>`,
shown by `secumail queue` and `/metrics`) and logged as an error for the operator.
Settings: scan.*.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from secumail.config import ScanSettings
from secumail.errors import ScannerUnavailable
from secumail.mail.content_limits import ContentLimits, check_content
from secumail.mail.scan_result import ScanResult, ScanVerdict
from secumail.net.clamd import ClamdClient
from secumail.net.rspamd import RspamdClient, SpamContext
from secumail.store.counters import Counters

log = logging.getLogger("secumail.scan")

UNAVAILABLE = "scan_unavailable:"  # counter prefix
IN_THREAD_FROM = 256 * 1024  # bodies this large are checked off the event loop


def refusal_reason(result: ScanResult) -> str:
    """What the sender is told (never content: a signature name, a score, a limit)."""
    if result.verdict is ScanVerdict.INFECTED:
        return f"virus found: {result.detail} ({result.engine})"
    if result.verdict is ScanVerdict.SPAM:
        return f"refused as spam: {result.detail} ({result.engine})"
    if result.engine == "limits":
        return f"cannot be scanned: {result.detail}"
    return f"cannot be scanned: over the {result.engine} limit {result.detail}"


class Scanner:
    def __init__(
        self,
        settings: ScanSettings,
        counters: Counters,
        *,
        clamd: ClamdClient | None = None,
        rspamd: RspamdClient | None = None,
    ) -> None:
        self.counters = counters
        self.clamd = clamd
        self.rspamd = rspamd
        self.limits = ContentLimits(
            max_header_fields=settings.max_header_fields,
            max_mime_depth=settings.max_mime_depth,
            max_mime_parts=settings.max_mime_parts,
            max_archive_depth=settings.max_archive_depth,
            max_inflated_bytes=settings.max_inflated_mib * 1024 * 1024,
            refuse_encrypted_archives=settings.refuse_encrypted_archives and clamd is not None,
        )

    @classmethod
    def from_settings(cls, settings: ScanSettings, counters: Counters) -> Scanner:
        clamd = ClamdClient(settings.clamd, timeout=settings.timeout) if settings.clamd else None
        rspamd = (
            RspamdClient(
                settings.rspamd, timeout=settings.timeout, reject_score=settings.spam_reject_score
            )
            if settings.rspamd
            else None
        )
        return cls(settings, counters, clamd=clamd, rspamd=rspamd)

    @property
    def engines(self) -> list[str]:
        return [c.engine for c in (self.clamd, self.rspamd) if c is not None]

    async def close(self) -> None:
        if self.rspamd is not None:
            await self.rspamd.close()

    async def scan(self, body: bytes, context: SpamContext) -> list[ScanResult]:
        """What each check said, in order; the last one refused when any did."""
        if len(body) >= IN_THREAD_FROM:
            breach = await asyncio.to_thread(check_content, body, self.limits)
        else:
            breach = check_content(body, self.limits)
        if breach is not None:
            return [ScanResult("limits", ScanVerdict.OVER_LIMIT, breach.reason)]
        results: list[ScanResult] = []
        try:
            if self.clamd is not None:
                results.append(await self.clamd.scan(body))
                if results[-1].refused:
                    return results
            if self.rspamd is not None:
                results.append(await self.rspamd.scan(body, context))
        except ScannerUnavailable as exc:
            await self.counters.bump(UNAVAILABLE + exc.engine)
            log.error(
                "scanner unavailable", extra={"fields": {"engine": exc.engine, "reason": exc.reason}}
            )
            raise
        return results


def refused(results: Sequence[ScanResult]) -> ScanResult | None:
    return next((r for r in results if r.refused), None)
