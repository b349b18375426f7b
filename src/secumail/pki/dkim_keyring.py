"""DKIM keys per sending domain: made, sealed at rest, checked in DNS, rotated, retired.

Every domain gets two keys with dated selectors (RSA-2048 for every receiver, Ed25519 per
RFC 8463), e.g. `sm202611r` and `sm202611e`. Private keys are stored sealed under the
master key; a key signs only once `domain verify` has seen its public half in DNS
(`published`), and until the operator retires it. Rotation adds a new pair: signing moves
to the newest published key of each algorithm, older ones stay valid in DNS until
retired, so mail in flight keeps verifying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from secumail.mail import dkim
from secumail.mail.address import AddressError, normalise_domain
from secumail.spool import sealing
from secumail.store.records import DkimKeyRow
from secumail.store.signing import SigningStore
from secumail.ttl_cache import TtlCache

log = logging.getLogger("secumail.dkim")

CACHE_SECONDS = 30.0
PARSED_KEYS = 10_000  # parsed private keys kept at most (then the memo starts over)
TxtLookup = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class DkimRecord:
    """One key's DNS record and its state, as the operator sees it."""

    domain: str
    selector: str
    algorithm: str
    name: str
    value: str
    published: bool
    retired: bool


def _record(row: DkimKeyRow) -> DkimRecord:
    return DkimRecord(
        row.domain,
        row.selector,
        row.algorithm,
        f"{row.selector}._domainkey.{row.domain}",
        row.public_record,
        row.published_at is not None,
        row.retired_at is not None,
    )


class DkimKeyring:
    def __init__(self, store: SigningStore, master_key: bytes) -> None:
        self.store = store
        self._master = master_key
        self._cache: TtlCache[list[dkim.DkimKey]] = TtlCache(CACHE_SECONDS)
        # Private keys as parsed, by their sealed form: which keys sign is re-read every
        # CACHE_SECONDS, but a key is parsed once — loading (and validating) an RSA-2048
        # key takes ~60 ms, which on the event loop every half minute was the worst
        # latency of a loaded gateway.
        self._parsed: dict[tuple[str, str, bytes], dkim.DkimKey] = {}

    def _aad(self, domain: str, selector: str) -> str:
        return f"dkim:{domain}:{selector}"

    async def create_keys(self, domain: str, now: float | None = None) -> list[DkimRecord]:
        """A new RSA + Ed25519 pair with selectors dated this month (unique per domain)."""
        taken = {r.selector for r in await self.store.dkim_keys(domain)}
        stamp = time.strftime("%Y%m", time.gmtime(time.time() if now is None else now))
        suffix = ""
        n = 0
        while f"sm{stamp}{suffix}r" in taken or f"sm{stamp}{suffix}e" in taken:
            n += 1
            suffix = f"x{n}"
        made = []
        for key in (
            # RSA key generation takes a good part of a second: not on the event loop
            await asyncio.to_thread(dkim.generate_rsa, domain, f"sm{stamp}{suffix}r"),
            dkim.generate_ed25519(domain, f"sm{stamp}{suffix}e"),
        ):
            _name, value = dkim.dns_record(key)
            sealed = sealing.wrap_key(
                self._master, self._aad(key.domain, key.selector), dkim.key_to_pem(key)
            )
            await self.store.add_dkim_key(key.domain, key.selector, key.algorithm, sealed, value)
            made.append(
                DkimRecord(
                    key.domain, key.selector, key.algorithm, key.record_name, value, False, False
                )
            )
        self._cache.discard(domain)
        return made

    async def ensure_keys(self, domain: str) -> list[DkimRecord]:
        """Keys for `domain`, creating the first pair when it has none; none (and a
        warning) when `domain` is no domain name at all — a machine whose hostname is
        `localhost` still starts, its notices leave unsigned until it is configured."""
        try:
            normalise_domain(domain)
        except AddressError:
            log.warning(
                "no DKIM keys for the gateway's own domain %r: not a domain name; set "
                "server.hostname (or signing.gateway_domain) to this gateway's FQDN",
                domain,
            )
            return []
        records = await self.records(domain)
        return records or await self.create_keys(domain)

    async def records(self, domain: str) -> list[DkimRecord]:
        return [_record(r) for r in await self.store.dkim_keys(domain)]

    def _load(self, row: DkimKeyRow) -> dkim.DkimKey:
        pem = sealing.unwrap_key(self._master, self._aad(row.domain, row.selector), row.sealed_key)
        return dkim.key_from_pem(row.domain, row.selector, row.algorithm, pem)

    async def check_published(
        self, domain: str, lookup: TxtLookup
    ) -> list[tuple[DkimRecord, bool, list[str]]]:
        """Look up each unretired key's record; mark it published (or not) accordingly."""
        results = await self.look_up(domain, lookup)
        for record, ok, _found in results:
            await self.store.mark_dkim_published(domain, record.selector, ok)
        self._cache.discard(domain)
        return results

    async def look_up(
        self, domain: str, lookup: TxtLookup
    ) -> list[tuple[DkimRecord, bool, list[str]]]:
        """Each unretired key's record as DNS has it now, and whether it matches the key;
        changes nothing (the daily health check watches, it does not stop signing)."""
        results = []
        for row in await self.store.dkim_keys(domain):
            if row.retired_at is not None:
                continue
            key = self._load(row)
            found = await lookup(key.record_name)
            ok = any(dkim.record_matches(key, txt) for txt in found)
            results.append((_record(row), ok, found))
        return results

    async def signing_keys(self, domain: str) -> list[dkim.DkimKey]:
        """The newest published, unretired key of each algorithm: RSA first, then Ed25519."""
        return await self._cache.get(domain, lambda: self._signing_keys(domain))

    async def _signing_keys(self, domain: str) -> list[dkim.DkimKey]:
        newest: dict[str, DkimKeyRow] = {}
        for row in await self.store.dkim_keys(domain):  # ordered oldest first
            if row.usable:
                newest[row.algorithm] = row
        return [await self._parsed_key(newest[a]) for a in dkim.ALGORITHMS if a in newest]

    async def _parsed_key(self, row: DkimKeyRow) -> dkim.DkimKey:
        memo = (row.domain, row.selector, row.sealed_key)
        key = self._parsed.get(memo)
        if key is None:
            key = await asyncio.to_thread(self._load, row)  # off the loop: tens of ms
            if len(self._parsed) >= PARSED_KEYS:
                self._parsed.clear()
            self._parsed[memo] = key
        return key

    async def retire(self, domain: str, selector: str) -> bool:
        done = await self.store.retire_dkim_key(domain, selector)
        self._cache.discard(domain)
        return done
