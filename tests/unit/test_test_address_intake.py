"""The test address at the inbound MX (pipeline/test_address.py, pipeline/inbound_mx.py,
store/test_replies.py) on a real database, and the sender checks (pipeline/sender_auth.py)
with the real libraries (pyspf, dkimpy, authheaders) against a fake DNS (no sockets)."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import dkim
import dns.resolver
import pytest
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from secumail.config import load_settings
from secumail.errors import ConfigError, DnsTemporaryError
from secumail.mail.address import Address
from secumail.mail.ids import new_message_id
from secumail.mail.sender_auth import AuthResult, DkimCheck, DmarcCheck, SenderAuth, SpfCheck
from secumail.mail.verp import bounce_address
from secumail.net.blocking_dns import BlockingDns
from secumail.net.smtp_server import Envelope
from secumail.pipeline import sender_auth
from secumail.pipeline import test_address as ta
from secumail.pipeline.bounce_intake import BounceIntake
from secumail.pipeline.embedded_bus import EmbeddedBus
from secumail.pipeline.inbound_mx import InboundMx
from secumail.pipeline.intake import Intake
from secumail.pipeline.sender_auth import AuthQuestion, SenderAuthenticator, org_domain
from secumail.spool.body_store import BodyStore
from secumail.store.counters import Counters
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.retention import MetadataRetention
from secumail.store.suppressions import SuppressionStore
from secumail.store.test_replies import WINDOW, ReplyRateLimits

HOST = "gw.test"
P, F = AuthResult.PASS, AuthResult.FAIL
AUTHENTICATED = SenderAuth(
    SpfCheck(P, "mailer.example"), (DkimCheck(P, "mailer.example", "s1"),), DmarcCheck(P, "mailer.example", "reject")
)
SPOOFED = SenderAuth(SpfCheck(F, "mailer.example"), (), DmarcCheck(F, "mailer.example", "reject"))
MESSAGE = (
    b"From: Alice <alice@mailer.example>\r\nTo: test@gw.test\r\nSubject: Geheim 42\r\n"
    b"Message-ID: <m1@mailer.example>\r\n\r\nPrivate body 12345\r\n"
)


class FixedAuthenticator:
    """Stands in for the libraries (tested below on their own): a given result."""

    def __init__(self, auth: SenderAuth) -> None:
        self.auth = auth
        self.asked: list[AuthQuestion] = []

    async def check_async(self, q: AuthQuestion) -> SenderAuth:
        self.asked.append(q)
        return self.auth


class World:
    def __init__(self, db: Database, auth: SenderAuth = AUTHENTICATED, *, per_domain: int = 10,
                 per_network: int = 30) -> None:
        self.store = MetadataStore(db)
        self.bodies = BodyStore(db, os.urandom(32))
        self.bus = EmbeddedBus(db, bound=100, lease=5.0)
        self.counters = Counters(db)
        self.now = 1_800_000_000.0
        self.auth = FixedAuthenticator(auth)
        self.tests = ta.TestAddressIntake(
            Intake(self.store, self.bodies, self.bus, "route"),
            self.auth,  # type: ignore[arg-type]
            ReplyRateLimits(db, per_domain=per_domain, per_network=per_network),
            self.counters,
            local_part="test",
            hostname=HOST,
            clock=lambda: self.now,
        )
        self.mx = InboundMx(
            BounceIntake(self.store, SuppressionStore(db), self.counters, self.bus, verp_key=b"k" * 32,
                         hostname=HOST, parse=lambda raw: None),
            None,
            self.tests,
        )

    async def send(self, *, sender: str | None = "alice@mailer.example", tls: str | None = "TLSv1.3",
                   ip: str = "192.0.2.7", message: bytes = MESSAGE, rcpts: tuple[str, ...] = ("test@gw.test",)) -> str:
        envelope = Envelope(ip, "mx.mailer.example", tls, "TLS_AES_256_GCM_SHA384" if tls else None,
                            Address(*sender.rsplit("@", 1)) if sender else None)
        envelope.rcpt_to = [Address(*r.rsplit("@", 1)) for r in rcpts]
        return str(await self.mx.accept(None, envelope, message))

    async def queued(self) -> list[str]:
        return [j.job.message_id for j in await self.bus.claim("route", 100)]


def run(coro):
    return asyncio.run(coro)


def test_an_authenticated_tls_sender_gets_one_report_queued_before_the_250(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db)
        reply = await w.send()
        assert reply.startswith("250 2.0.0") and "secure route" in reply
        [mid] = await w.queued()
        record = await w.store.message(mid)
        assert record.account_id is None and record.mail_from == ""  # the gateway's own, null sender
        assert [r.address for r in record.recipients] == ["alice@mailer.example"]
        assert record.header_from == f"test@{HOST}"
        body = await w.bodies.get(mid)
        assert b"Auto-Submitted: auto-replied" in body and b"In-Reply-To: <m1@mailer.example>" in body
        assert b"Geheim" not in body and b"12345" not in body  # nothing of the message
        [asked] = w.auth.asked
        assert (asked.client_ip, asked.mail_from, asked.helo) == ("192.0.2.7", "alice@mailer.example",
                                                                  "mx.mailer.example")
        assert await w.counters.all() == {}

    run(go())


def test_plaintext_is_refused_with_554_5_7_10_and_nothing_is_checked_or_queued(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db)
        reply = await w.send(tls=None)
        assert reply.startswith("554 5.7.10") and "zonder TLS" in reply
        assert await w.queued() == [] and w.auth.asked == []
        assert await w.counters.all() == {"test_address_dropped:plaintext": 1}

    run(go())


@pytest.mark.parametrize(
    ("auth", "sender", "message", "reason"),
    [
        (SPOOFED, "alice@mailer.example", MESSAGE, "unverified_sender"),
        (AUTHENTICATED, None, MESSAGE, "null_sender"),
        (AUTHENTICATED, "alice@mailer.example", b"Auto-Submitted: auto-replied\r\n" + MESSAGE, "auto_submitted"),
        (AUTHENTICATED, "alice@mailer.example", b" starts folded\r\n" + MESSAGE, "malformed"),
        # SPF and DKIM passed, but for mailer.example: the envelope sender is another domain.
        (AUTHENTICATED, "ceo@victim.example", MESSAGE, "unverified_sender"),
    ],
)
def test_no_report_is_answered_250_and_counted(gateway_db, auth, sender, message, reason) -> None:
    async def go() -> None:
        w = World(gateway_db, auth)
        reply = await w.send(sender=sender, message=message)
        assert reply.startswith("250 2.0.0")  # the same answer: no oracle
        assert await w.queued() == []
        assert await w.counters.all() == {f"test_address_dropped:{reason}": 1}

    run(go())


def test_replies_are_limited_per_sender_domain_and_per_network_for_an_hour(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db, per_domain=2, per_network=3)
        assert (await w.send()).startswith("250") and (await w.send()).startswith("250")
        assert (await w.send()).startswith("250 2.0.0")
        assert len(await w.queued()) == 2
        assert await w.counters.all() == {"test_address_dropped:rate_domain": 1}
        # Another domain from the same /24: the network's third, then its limit.
        w.auth.auth = SenderAuth(SpfCheck(P, "other.example"), (), DmarcCheck(AuthResult.NONE, "", ""))
        await w.send(sender="bob@other.example", ip="192.0.2.200")
        await w.send(sender="bob@other.example", ip="192.0.2.201")
        assert len(await w.queued()) == 1
        assert (await w.counters.all())["test_address_dropped:rate_network"] == 1
        # From elsewhere it is still answered; an hour later the first domain is, too.
        await w.send(sender="bob@other.example", ip="198.51.100.1")
        w.now += WINDOW + 1
        w.auth.auth = AUTHENTICATED
        await w.send()
        assert len(await w.queued()) == 2
        left = await gateway_db.read(lambda c: c.execute("SELECT count(*) FROM test_replies").fetchone()[0])
        assert left == 1  # rows past the hour were purged

    run(go())


def test_a_test_message_and_a_bounce_in_one_transaction_each_reach_their_reader(gateway_db) -> None:
    async def go() -> None:
        w = World(gateway_db)
        bounce = bounce_address(b"k" * 32, new_message_id(), "dr@clinic.test", HOST)
        reply = await w.send(rcpts=("test@gw.test", bounce))
        assert reply.startswith("250 2.0.0 Ok: bounce received")
        assert len(await w.queued()) == 1  # the report
        assert "bounces_dropped:unknown_message" in await w.counters.all()
        # In plaintext the test address's refusal answers for the whole transaction.
        reply = await w.send(tls=None, rcpts=("test@gw.test", bounce))
        assert reply.startswith("554 5.7.10")

    run(go())


def test_the_test_address_is_taken_case_insensitively_and_only_at_the_hostname(gateway_db) -> None:
    w = World(gateway_db)
    assert w.tests.takes(Address("TEST", HOST))
    assert not w.tests.takes(Address("test", "other.test"))
    assert not w.tests.takes(Address("test+x", HOST))


# -- the sender checks, with the real libraries and a fake DNS ------------------------


class FakeDns(BlockingDns):
    def __init__(self, zone: dict[tuple[str, str], list[object]], failing: set[str] = frozenset()) -> None:
        super().__init__(["127.0.0.1:1"], 1.0)
        self.zone = zone
        self.failing = failing
        self.asked: list[tuple[str, str]] = []

    def records(self, name: str, rdtype: str, timeout: float | None = None) -> list[object]:
        name = name.rstrip(".").lower()
        self.asked.append((name, rdtype))
        if name in self.failing:
            raise DnsTemporaryError(f"{name}: DNS timeout")
        return list(self.zone.get((name, rdtype), []))


class Txt:
    def __init__(self, text: str) -> None:
        self.strings = tuple(text.encode()[i : i + 255] for i in range(0, len(text), 255))


class A:
    def __init__(self, address: str) -> None:
        self.address = address


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    der = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def zone(public: str, **extra: list[object]) -> dict[tuple[str, str], list[object]]:
    z: dict[tuple[str, str], list[object]] = {
        ("mailer.test", "TXT"): [Txt("v=spf1 a:out.mailer.test -all")],
        ("out.mailer.test", "A"): [A("192.0.2.7")],
        ("s1._domainkey.mailer.test", "TXT"): [Txt(f"v=DKIM1; k=rsa; p={public}")],
        ("_dmarc.mailer.test", "TXT"): [Txt("v=DMARC1; p=reject")],
    }
    for name, records in extra.items():
        z[(name.replace("__", "."), "TXT")] = records
    return z


def sign(message: bytes, pem: bytes, domain: str = "mailer.test") -> bytes:
    return dkim.sign(message, b"s1", domain.encode(), pem, include_headers=[b"from", b"subject"]) + message


def message_from(author: str) -> bytes:
    return f"From: {author}\r\nSubject: hi\r\n\r\nbody\r\n".encode()


def test_spf_dkim_and_dmarc_pass_through_the_gateways_resolver(key, monkeypatch) -> None:
    pem, public = key

    def no_global_dns(*args, **kwargs):  # pyspf's module-level lookup must not be used
        raise AssertionError("spf.DNSLookup called")

    monkeypatch.setattr(spf, "DNSLookup", no_global_dns)
    before = dns.resolver.default_resolver
    fake = FakeDns(zone(public))
    auth = SenderAuthenticator(fake).check(
        AuthQuestion(sign(message_from("a@mailer.test"), pem), "192.0.2.7", "a@mailer.test", "out.mailer.test")
    )
    assert auth.spf == SpfCheck(P, "mailer.test")
    assert auth.dkim == (DkimCheck(P, "mailer.test", "s1"),)
    assert auth.dmarc == DmarcCheck(P, "mailer.test", "reject")
    assert ("s1._domainkey.mailer.test", "TXT") in fake.asked and ("_dmarc.mailer.test", "TXT") in fake.asked
    assert dns.resolver.default_resolver is before  # never replaced


def test_every_signature_is_checked(key) -> None:
    pem, public = key
    message = sign(message_from("a@mailer.test"), pem)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    message = sign(message, other, "esp.test")  # on top: a signature that will not verify (no key)
    auth = SenderAuthenticator(FakeDns(zone(public))).check(
        AuthQuestion(message, "198.51.100.9", "a@mailer.test", "x.test")
    )
    assert auth.spf.result is F
    assert [(c.domain, c.result) for c in auth.dkim] == [("esp.test", F), ("mailer.test", P)]
    assert auth.dmarc.result is P  # the aligned DKIM pass


def test_a_spoofed_from_signed_by_a_stranger_under_an_unknown_tld_fails_dmarc(key) -> None:
    """victim.test's DMARC with a message signed by mailer.test: authheaders' own
    alignment would take both for organization "test" and pass it."""
    pem, public = key
    z = zone(public, _dmarc__victim__test=[Txt("v=DMARC1; p=reject")])
    auth = SenderAuthenticator(FakeDns(z)).check(
        AuthQuestion(sign(message_from("ceo@victim.test"), pem), "198.51.100.9", "ceo@victim.test", "x.test")
    )
    assert auth.dkim == (DkimCheck(P, "mailer.test", "s1"),)
    assert auth.dmarc == DmarcCheck(F, "victim.test", "reject")
    assert org_domain("victim.test") != org_domain("mailer.test")


def test_several_from_fields_are_a_dmarc_permerror(key) -> None:
    pem, public = key
    message = b"From: a@mailer.test\r\n" + message_from("ceo@victim.test")
    auth = SenderAuthenticator(FakeDns(zone(public))).check(
        AuthQuestion(sign(message, pem), "192.0.2.7", "a@mailer.test", "x.test")
    )
    assert auth.dmarc == DmarcCheck(AuthResult.PERMERROR, "", "")


def test_dns_failures_are_temperrors_never_a_pass(key) -> None:
    pem, public = key
    fake = FakeDns(zone(public), failing={"mailer.test", "s1._domainkey.mailer.test", "_dmarc.mailer.test"})
    auth = SenderAuthenticator(fake).check(
        AuthQuestion(sign(message_from("a@mailer.test"), pem), "192.0.2.7", "a@mailer.test", "x.test")
    )
    assert auth.spf.result is AuthResult.TEMPERROR
    assert [c.result for c in auth.dkim] == [AuthResult.TEMPERROR]
    assert auth.dmarc.result is AuthResult.TEMPERROR


def test_two_dmarc_records_count_as_none(key) -> None:
    pem, public = key
    z = zone(public)
    z[("_dmarc.mailer.test", "TXT")] = [Txt("v=DMARC1; p=reject"), Txt("v=DMARC1; p=none")]
    auth = SenderAuthenticator(FakeDns(z)).check(
        AuthQuestion(sign(message_from("a@mailer.test"), pem), "192.0.2.7", "a@mailer.test", "x.test")
    )
    assert auth.dmarc == DmarcCheck(AuthResult.NONE, "mailer.test", "")


def test_the_retention_purge_removes_rate_limit_rows_past_their_hour(gateway_db) -> None:
    async def go() -> None:
        limits = ReplyRateLimits(gateway_db, per_domain=5, per_network=5)
        assert await limits.reserve("mailer.example", "192.0.2.0/24", now=1000.0) is None
        assert await limits.reserve("mailer.example", "192.0.2.0/24", now=1000.0 + WINDOW) is None
        await MetadataRetention(gateway_db, 30).purge(now=1001.0 + WINDOW)
        rows = await gateway_db.read(lambda c: c.execute("SELECT sent_at FROM test_replies").fetchall())
        assert [r[0] for r in rows] == [1000.0 + WINDOW]

    run(go())


def test_the_test_address_must_differ_from_the_tls_report_address() -> None:
    with pytest.raises(ConfigError, match="test_address must differ from tlsrpt_address"):
        load_settings(None, {"SECUMAIL_INBOUND__TEST_ADDRESS": "TLSRPT"})
    with pytest.raises(ConfigError, match="test_address"):
        load_settings(None, {"SECUMAIL_INBOUND__TEST_ADDRESS": "test+x"})  # never a bounce address
    assert load_settings(None, {"SECUMAIL_INBOUND__TEST_ADDRESS": ""}).inbound.test_address == ""


def test_a_senders_slow_dns_cannot_hold_the_checks_past_their_deadline(key) -> None:
    """Every lookup of one check shares one deadline: once it is past, no lookup starts
    and what is left is a temperror (never a pass)."""
    pem, public = key
    fake = FakeDns(zone(public))
    auth = SenderAuthenticator(fake).check(
        AuthQuestion(sign(message_from("a@mailer.test"), pem), "192.0.2.7", "a@mailer.test", "x.test"),
        deadline=time.monotonic() - 1,
    )
    assert fake.asked == []
    assert auth.spf.result is AuthResult.TEMPERROR
    assert [c.result for c in auth.dkim] == [AuthResult.TEMPERROR]
    assert auth.dmarc.result is AuthResult.TEMPERROR


def test_checks_that_outlast_their_time_are_temperrors(key, monkeypatch) -> None:
    """Each lookup takes longer than the whole allowance: the answer comes at the
    deadline, every result temperror (no reply follows from it)."""
    pem, public = key

    class SlowDns(FakeDns):
        def records(self, name, rdtype, timeout=None):
            time.sleep(0.3)
            return super().records(name, rdtype, timeout)

    monkeypatch.setattr(sender_auth, "TOTAL_SECONDS", 0.1)

    async def go() -> None:
        authenticator = SenderAuthenticator(SlowDns(zone(public)))
        try:
            auth = await authenticator.check_async(
                AuthQuestion(sign(message_from("a@mailer.test"), pem), "192.0.2.7", "a@mailer.test", "x")
            )
        finally:
            authenticator.close()
        assert auth.spf.result is AuthResult.TEMPERROR and auth.dmarc.result is AuthResult.TEMPERROR

    run(go())
