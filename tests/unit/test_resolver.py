"""The resolver's memory of answers (secumail.net.dns.Resolver) against a real DNS
server on loopback: absences are remembered for the negative TTL the zone gives (RFC
2308 §5), concurrent lookups of one name share one query, and an answer in use is
refreshed before it expires, so mail to a busy domain never waits for its records."""

from __future__ import annotations

import asyncio

import pytest

from secumail.errors import DnsPermanentError
from secumail.net import dns as secumail_dns
from secumail.net.dns import Resolver
from tests.harness.dns import AuthoritativeDns


def _asked(server: AuthoritativeDns, name: str, rdtype: str) -> int:
    return sum(1 for q in server.queries if q == (name, rdtype))


def test_an_absence_is_remembered_for_the_zones_negative_ttl(dns: AuthoritativeDns) -> None:
    dns.negative_ttl = 300
    dns.add("mx.clinic.test", "A", "127.0.0.9")

    async def main() -> None:
        resolver = Resolver([dns.address])
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        dns.add("mx.clinic.test", "AAAA", "::1")  # appears later: the absence still holds
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        with pytest.raises(DnsPermanentError):
            await resolver.mx("gone.test")
        dns.add("gone.test", "MX", "10 mx.clinic.test.")
        with pytest.raises(DnsPermanentError):
            await resolver.mx("gone.test")

    asyncio.run(main())
    assert _asked(dns, "mx.clinic.test", "AAAA") == 1
    assert _asked(dns, "gone.test", "MX") == 1


def test_a_zero_negative_ttl_is_not_remembered(dns: AuthoritativeDns) -> None:
    dns.add("mx.clinic.test", "A", "127.0.0.9")

    async def main() -> None:
        resolver = Resolver([dns.address])
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        dns.add("mx.clinic.test", "AAAA", "::1")
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9", "::1"]

    asyncio.run(main())


def test_concurrent_lookups_of_one_name_share_one_query(dns: AuthoritativeDns) -> None:
    dns.add("clinic.test", "MX", "10 mx.clinic.test.")

    async def main() -> None:
        resolver = Resolver([dns.address])
        answers = await asyncio.gather(*(resolver.mx("clinic.test") for _ in range(20)))
        assert {tuple(h.host for h in a.hosts) for a in answers} == {("mx.clinic.test",)}

    asyncio.run(main())
    assert _asked(dns, "clinic.test", "MX") == 1


def test_an_answer_in_use_is_refreshed_before_it_expires(
    dns: AuthoritativeDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refresh once less than 90% of the TTL is left (the default is the last 10%), so
    # the refresh window opens after 0.4 s of a 4 s TTL.
    monkeypatch.setattr(secumail_dns, "PREFETCH_FRACTION", 0.9)
    dns.add("mx.clinic.test", "A", "127.0.0.9", ttl=4)

    async def main() -> None:
        resolver = Resolver([dns.address])
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        dns.remove("mx.clinic.test", "A")
        dns.add("mx.clinic.test", "A", "127.0.0.10", ttl=4)
        await asyncio.sleep(0.6)
        # Still valid: served from memory at once, while a refresh goes out.
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        for _ in range(100):
            if _asked(dns, "mx.clinic.test", "A") == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.10"]

    asyncio.run(main())
    assert _asked(dns, "mx.clinic.test", "A") == 2, "one lookup, one refresh"


def test_a_failed_refresh_keeps_serving_the_valid_answer(
    dns: AuthoritativeDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secumail_dns, "PREFETCH_FRACTION", 0.9)
    dns.add("mx.clinic.test", "A", "127.0.0.9", ttl=4)

    async def main() -> None:
        resolver = Resolver([dns.address], timeout=0.5)
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        dns.fail("mx.clinic.test", "SERVFAIL")
        await asyncio.sleep(0.6)
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]
        await asyncio.sleep(0.3)  # the refresh has failed by now
        assert await resolver.addresses("mx.clinic.test") == ["127.0.0.9"]

    asyncio.run(main())
