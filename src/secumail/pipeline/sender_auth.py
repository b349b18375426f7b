"""SPF, DKIM and DMARC for a message received, with maintained libraries.

- SPF (RFC 7208): pyspf (`spf.query`), for the client address, MAIL FROM and HELO; the
  whole check within `SPF_SECONDS` (pyspf's querytime, §4.6.4), its lookup limits its own.
- DKIM (RFC 6376 §6): dkimpy, every DKIM-Signature field (at most `MAX_SIGNATURES`).
- DMARC (RFC 7489 §6.6): authheaders fetches, checks and parses the policy record
  (`lookup_receiver_record`), for the From domain *we* read strictly
  (`mail.sender_auth.dmarc_from_domain`; several or unreadable From fields: permerror);
  alignment and the result are ours (`mail.sender_auth.dmarc_evaluate`), with the
  organizational domain from the Public Suffix List authheaders ships but its default
  rule applied (`org_domain`): authheaders' `dmarc_per_from` would align any two names
  under a TLD missing from that list (it takes the bare TLD as their organization).

All three are synchronous and do their own DNS lookups: they run in a worker thread
of its own (`SenderAuthenticator`, every lookup within `TOTAL_SECONDS`), and every lookup goes to the
gateway's configured resolver through `net.blocking_dns.BlockingDns`: dkimpy and
authheaders take it as their `dnsfunc`; for pyspf, `_GatewaySpfQuery` overrides the one
method (`query.dns`) that calls its module-level `DNSLookup`. Neither dnspython's default
resolver nor any library global is changed.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dkim
import spf
from authheaders.dmarc_lookup import lookup_receiver_record
from publicsuffix2 import PublicSuffixList

from secumail.errors import DnsTemporaryError
from secumail.mail.headers import HeaderError, parse_header_section
from secumail.mail.sender_auth import (
    AuthResult,
    DkimCheck,
    DmarcCheck,
    SenderAuth,
    SpfCheck,
    clean_domain,
    clean_token,
    dmarc_evaluate,
    dmarc_from_domain,
)
from secumail.net.blocking_dns import BlockingDns

log = logging.getLogger("secumail.inbound")
# dkimpy logs each signature's fields (DEBUG) and a sender's missing key (ERROR) under its
# own name; a sender's DKIM trouble is a result in their report, not our error: silenced.
_dkim_log = logging.getLogger("secumail.inbound.dkim")
_dkim_log.setLevel(logging.CRITICAL)

SPF_SECONDS = 10.0
MAX_SIGNATURES = 5
TOTAL_SECONDS = 30.0


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The Public Suffix List authheaders ships, read once."""
    ref = importlib.resources.files("authheaders") / "public_suffix_list.txt"
    with importlib.resources.as_file(ref) as path, open(path, encoding="utf-8") as f:
        return PublicSuffixList(f)


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2): the public suffix plus one label. A name
    under a TLD the list does not know takes the list's default rule "*" (the TLD is the
    suffix), not authheaders' answer (the bare TLD, which would align every such name)."""
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) < 2:
        return domain
    try:
        found = _public_suffixes().get_public_suffix(domain, strict=True)
    except Exception:  # noqa: BLE001 - a library failure on a strange name: the default rule
        found = None
    if not found or "." not in found:
        return ".".join(labels[-2:])
    return str(found)


@dataclass(frozen=True, slots=True)
class AuthQuestion:
    message: bytes
    client_ip: str
    mail_from: str  # the envelope sender, "" for <>
    helo: str


class _Budget(BlockingDns):
    """The lookups of one check, all within its deadline: each lookup's timeout is cut to
    the time left, and none starts after it (a sender's slow DNS cannot hold a thread
    longer than TOTAL_SECONDS)."""

    def __init__(self, dns: BlockingDns, deadline: float) -> None:  # no super(): a wrapper
        self._dns = dns
        self._deadline = deadline

    def records(self, name: str, rdtype: str, timeout: float | None = None) -> list[object]:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DnsTemporaryError(f"{name} {rdtype}: the checks' time is up")
        return self._dns.records(name, rdtype, left if timeout is None else min(timeout, left))


class SenderAuthenticator:
    """Runs the checks in a small pool of its own (`THREADS`), not the event loop's
    default executor: a flood of test messages with slow DNS waits its turn there and
    never starves the rest of the gateway's threads."""

    THREADS = 4

    def __init__(self, dns: BlockingDns, *, timeout: float = 5.0) -> None:
        self.dns = dns
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="secumail-senderauth")

    async def check_async(self, q: AuthQuestion) -> SenderAuth:
        """`check` off the event loop; past TOTAL_SECONDS (waiting for a thread included)
        every result is temperror."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + TOTAL_SECONDS
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, self.check, q, deadline), TOTAL_SECONDS
            )
        except TimeoutError:
            log.warning("sender checks timed out")
            return _all_temperror(q)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def check(self, q: AuthQuestion, deadline: float | None = None) -> SenderAuth:
        """SPF, DKIM and DMARC for `q` (blocking), every lookup before `deadline`
        (monotonic; default TOTAL_SECONDS from now)."""
        dns = _Budget(self.dns, deadline or time.monotonic() + TOTAL_SECONDS)
        return _Check(dns, self.timeout).run(q)


class _Check:
    """One message's checks, with the lookups of its budget."""

    def __init__(self, dns: BlockingDns, timeout: float) -> None:
        self.dns = dns
        self.timeout = timeout

    def run(self, q: AuthQuestion) -> SenderAuth:
        spf_check = self.spf(q)
        dkim_checks = self.dkim(q.message)
        return SenderAuth(spf_check, dkim_checks, self.dmarc(q.message, spf_check, dkim_checks))

    # -- SPF -------------------------------------------------------------------------
    def spf(self, q: AuthQuestion) -> SpfCheck:
        identity = q.mail_from or f"postmaster@{q.helo}"  # RFC 7208 §2.4: <> → HELO
        domain = clean_domain(identity.rpartition("@")[2])
        if not domain:
            return SpfCheck(AuthResult.NONE, clean_token(identity.rpartition("@")[2], 253))
        try:
            query = _GatewaySpfQuery(
                self.dns, i=q.client_ip, s=identity, h=q.helo, querytime=SPF_SECONDS
            )
            result, _code, _explanation = query.check()
            return SpfCheck(AuthResult(str(result)), domain)
        except ValueError:
            return SpfCheck(AuthResult.PERMERROR, domain)
        except Exception:  # a library failure on hostile input
            log.exception("spf check failed")
            return SpfCheck(AuthResult.TEMPERROR, domain)

    # -- DKIM ------------------------------------------------------------------------
    def dkim(self, message: bytes) -> tuple[DkimCheck, ...]:
        try:
            count = len(parse_header_section(message).get_all("DKIM-Signature"))
        except HeaderError:
            return ()
        checks = []
        for idx in range(min(count, MAX_SIGNATURES)):
            checks.append(self._one_signature(message, idx))
        return tuple(checks)

    def _one_signature(self, message: bytes, idx: int) -> DkimCheck:
        verifier = dkim.DKIM(message, logger=_dkim_log, timeout=int(self.timeout) or 1)
        try:
            ok = verifier.verify(idx=idx, dnsfunc=self._dkim_txt)
            result = AuthResult.PASS if ok else AuthResult.FAIL
        except DnsTemporaryError:
            result = AuthResult.TEMPERROR
        except dkim.DKIMException:
            result = AuthResult.PERMERROR
        except Exception:  # a library failure on hostile input
            log.exception("dkim check failed")
            result = AuthResult.PERMERROR
        fields = getattr(verifier, "signature_fields", None) or {}
        return DkimCheck(
            result,
            clean_domain(_text(fields.get(b"d", b""))),
            clean_token(_text(fields.get(b"s", b""))),
        )

    def _dkim_txt(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        host = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        records = self.dns.txt(host, min(float(timeout), self.timeout))
        return records[0] if records else None

    # -- DMARC -----------------------------------------------------------------------
    def dmarc(
        self, message: bytes, spf_check: SpfCheck, dkim_checks: tuple[DkimCheck, ...]
    ) -> DmarcCheck:
        """RFC 7489 §6.6.3 policy discovery through authheaders (the record at the From
        domain, else at its organizational domain; fetched, checked and parsed by
        `lookup_receiver_record`), evaluated by `mail.sender_auth.dmarc_evaluate`."""
        from_domain = dmarc_from_domain(message)
        if from_domain is None:
            return DmarcCheck(AuthResult.PERMERROR, "", "")
        try:
            record = lookup_receiver_record(from_domain, self._dmarc_txt)
            at_org = False
            org = org_domain(from_domain)
            if not record and org != from_domain:
                record, at_org = lookup_receiver_record(org, self._dmarc_txt), True
        except DnsTemporaryError:
            return DmarcCheck(AuthResult.TEMPERROR, from_domain, "")
        except Exception:  # noqa: BLE001 - a malformed record (DMARCException) or a bug
            return DmarcCheck(AuthResult.PERMERROR, from_domain, "")
        return dmarc_evaluate(
            from_domain,
            {str(k): str(v) for k, v in record.items()} if record else None,
            from_org_domain=at_org,
            spf=spf_check,
            dkim=dkim_checks,
            org_domain=org_domain,
        )

    def _dmarc_txt(self, name: str) -> str | None:
        """authheaders' dnsfunc: the one DMARC record at `name`, or None (several records
        count as none, RFC 7489 §6.6.3)."""
        records = [
            r.decode("ascii", "replace") for r in self.dns.txt(name) if r.startswith(b"v=DMARC1")
        ]
        return records[0] if len(records) == 1 else None


class _GatewaySpfQuery(spf.query):  # type: ignore[misc]
    """pyspf's query with its DNS through the gateway's resolver (`BlockingDns`).

    Replaces `query.dns`, which otherwise calls the module-level `spf.DNSLookup`
    (dnspython's default resolver). Kept from the original: its answer cache, the
    overall time budget (querytime) and the void lookup limit (RFC 7208 §4.6.4); CNAMEs
    are followed by the resolver."""

    def __init__(self, lookups: BlockingDns, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lookups = lookups

    def dns(
        self, name: Any, qtype: str, cnames: Any = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key in self.cache:
            return list(self.cache[key])
        if self.querytime < 0:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        started = time.monotonic()
        timeout = min(self.timeout, self.querytime) if self.querytime > 0 else self.timeout
        try:
            records = self._lookups.records(name, qtype, timeout)
        except DnsTemporaryError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        if self.querytime > 0:
            self.querytime -= time.monotonic() - started
        result = [_spf_value(qtype, r) for r in records]
        self.cache[key] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return list(result)


def _spf_value(qtype: str, rdata: Any) -> Any:
    """An answer in the form pyspf's own lookup gives it."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    return tuple(rdata.strings)  # TXT (and the obsolete SPF type)


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _all_temperror(q: AuthQuestion) -> SenderAuth:
    domain = clean_domain((q.mail_from or q.helo).rpartition("@")[2])
    return SenderAuth(
        SpfCheck(AuthResult.TEMPERROR, domain),
        (),
        DmarcCheck(AuthResult.TEMPERROR, dmarc_from_domain(q.message) or "", ""),
    )
