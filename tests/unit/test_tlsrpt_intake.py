"""TLS reports (RFC 8460) received at the gateway's own domain: reading the report mail
(§5.3, mail/tlsrpt_mail.py), the inbound MX taking `<inbound.tlsrpt_address>@<hostname>`
(pipeline/inbound_mx.py, pipeline/tlsrpt_intake.py) and keeping metadata only
(store/tls_reports_received.py), on a real database, in memory (no sockets)."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime

import pytest

from secumail.cli.tlsrpt import received_row
from secumail.mail.address import Address
from secumail.mail.dns_records import tlsrpt_record
from secumail.mail.ids import new_message_id
from secumail.mail.ip_scope import client_network
from secumail.mail.tlsrpt import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    ReportPolicy,
    ReportTooLarge,
    ResultType,
    TlsReport,
    TlsRptError,
    gzip_report,
    parse_report,
    report_message,
)
from secumail.mail.tlsrpt_mail import TlsReportMailError, read_report_mail
from secumail.mail.verp import bounce_address
from secumail.net.smtp_server import Envelope
from secumail.pipeline.inbound_mx import InboundMx
from secumail.pipeline.tlsrpt_intake import TlsReportIntake
from secumail.store.database import Database
from secumail.store.tls_reports_received import MAX_FAILURES, Kept, TlsReportsReceived
from tests.unit.test_bounce_intake import KEY, World, failed
from tests.unit.test_submission_session import HOST, Conversation, talk

START = datetime(2026, 12, 6, tzinfo=UTC)
END = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC)
MX = ReportPolicy(PolicyType.STS, HOST, ("version: STSv1", "mode: enforce"), (HOST,))


def a_report(report_id: str = "2026-12-06T00:00:00Z_gw.test", *, failures: int = 3) -> TlsReport:
    return TlsReport(
        "Mail Corp",
        START,
        END,
        "mailto:tls@mailcorp.example",
        report_id,
        (
            PolicyResult(
                MX,
                41,
                failures,
                (
                    (
                        FailureDetail(
                            ResultType.CERTIFICATE_EXPIRED, "198.51.100.1", HOST, receiving_ip="192.0.2.25"
                        ),
                        failures - 1,
                    ),
                    (FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, "198.51.100.1", HOST), 1),
                ),
            ),
        ),
    )


def report_mail(report: TlsReport) -> bytes:
    """The mail as a reporting MTA sends it (§5.3): Secumail's own builder."""
    return report_message(
        report,
        policy_domain=HOST,
        submitter="mailcorp.example",
        from_addr="noreply-tlsrpt@mailcorp.example",
        to_addrs=[f"tlsrpt@{HOST}"],
        message_id="<r1@mailcorp.example>",
        date=datetime(2026, 12, 7, 1, 0, tzinfo=UTC),
    ).as_bytes()


def mail_with(content_type: str, body: bytes) -> bytes:
    """A report mail with one attachment of ``content_type`` (base64)."""
    import base64

    b64 = base64.encodebytes(body).decode()
    return (
        "From: r@mailcorp.example\r\nTo: tlsrpt@gw.test\r\nSubject: Report\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\n'
        f"A report.\r\n--X\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{b64}\r\n--X--\r\n"
    ).encode()


def bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """A valid-looking gzip that inflates to ``size`` bytes of JSON whitespace."""
    return gzip.compress(b'{"organization-name": "x"' + b" " * size + b"}", compresslevel=9)


# -- reading the mail (§5.3) --------------------------------------------------------------


def test_the_gzip_report_mail_a_reporting_mta_sends_is_read() -> None:
    report = read_report_mail(report_mail(a_report()))
    assert report == a_report()


def test_the_json_variant_and_a_lenient_container_are_read() -> None:
    """§5.3 allows application/tlsrpt+json; the container may be any multipart."""
    assert read_report_mail(mail_with("application/tlsrpt+json", a_report().to_json())) == a_report()
    assert read_report_mail(mail_with("application/tlsrpt+gzip", gzip_report(a_report().to_json()))) == a_report()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/json", b"{}", "not_a_report"),  # the right JSON under another type
        ("application/gzip", b"\x1f\x8b", "not_a_report"),
        ("application/tlsrpt+json", b'{"organization-name": 3}', "unreadable"),
        ("application/tlsrpt+json", b"[" * 100_000 + b"]" * 100_000, "unreadable"),  # nesting
        ("application/tlsrpt+json", b"\x1f\x8b\x08\x00", "unreadable"),  # gzip under +json
        ("application/tlsrpt+gzip", b"not gzip at all", "unreadable"),
        ("application/tlsrpt+gzip", b"", "unreadable"),
    ],
)
def test_mail_without_a_readable_report_says_why(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(TlsReportMailError) as caught:
        read_report_mail(mail_with(content_type, body))
    assert caught.value.reason == reason


def test_a_truncated_gzip_report_is_unreadable() -> None:
    whole = gzip_report(a_report().to_json())
    with pytest.raises(TlsReportMailError) as caught:
        read_report_mail(mail_with("application/tlsrpt+gzip", whole[: len(whole) // 2]))
    assert caught.value.reason == "unreadable"


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    """64 MiB of JSON in a 64 KiB attachment: inflating stops after 5 MiB (the default cap)."""
    data = bomb()
    assert len(data) < 100 * 1024
    with pytest.raises(TlsReportMailError) as caught:
        read_report_mail(mail_with("application/tlsrpt+gzip", data))
    assert caught.value.reason == "oversized"
    with pytest.raises(ReportTooLarge):
        parse_report(data)  # the JSON reader's own gzip path has the same cap
    with pytest.raises(TlsReportMailError) as caught:  # the +json variant: the same cap
        read_report_mail(mail_with("application/tlsrpt+json", a_report().to_json()), max_json=100)
    assert caught.value.reason == "oversized"


def test_deep_nesting_is_a_report_error_not_a_crash() -> None:
    with pytest.raises(TlsRptError):
        parse_report(b"[" * 200_000 + b"]" * 200_000)


# -- the inbound MX: which recipients (RFC 5321 §3.6: never a relay) ----------------------


class ReportWorld(World):
    def __init__(self, db: Database, local_part: str = "tlsrpt", per_client_per_day: int = 0) -> None:
        super().__init__(db, failed("dr@clinic.test"))
        self.received = TlsReportsReceived(db)
        self.reports = TlsReportIntake(
            self.received,
            self.counters,
            local_part=local_part,
            hostname=HOST,
            per_client_per_day=per_client_per_day,
        )
        self.mx = InboundMx(self.intake, self.reports if local_part else None)

    async def deliver(self, message: bytes, *addresses: str, client_ip: str = "192.0.2.9") -> str:
        envelope = Envelope(client_ip, "mx.mailcorp.example", None, None, None)
        envelope.rcpt_to = [Address(*a.rsplit("@", 1)) for a in addresses]
        return str(await self.mx.accept(None, envelope, message))


async def rcpt_replies(mx: InboundMx, addresses: list[str]) -> list[str]:
    replies = []
    for address in addresses:
        c = Conversation(mx, max_recipients=3)  # type: ignore[arg-type]
        await c.open()
        await c.send(b"EHLO mx.mailcorp.example\r\n")
        assert await c.send(b"MAIL FROM:<noreply-tlsrpt@mailcorp.example>\r\n") == ["250 2.1.0 Sender ok"]
        replies.append((await c.send(f"RCPT TO:<{address}>\r\n".encode()))[0])
    return replies


def test_the_report_address_of_this_host_is_taken_case_insensitively(gateway_db) -> None:
    bounce = bounce_address(KEY, new_message_id(), "dr@clinic.test", HOST)

    async def go() -> None:
        mx = ReportWorld(gateway_db).mx
        taken = [f"tlsrpt@{HOST}", f"TLSRPT@{HOST.upper()}", f"TlsRpt@{HOST}", bounce]
        assert await rcpt_replies(mx, taken) == ["250 2.1.5 Recipient ok"] * 4
        refused = [
            "tlsrpt@mailcorp.example",
            f"tlsrpt+x@{HOST}",
            f"tlsrpt.x@{HOST}",
            f'"tlsrpt"@{HOST}',
            "tlsrpt@[192.0.2.1]",
            f"tls-reports@{HOST}",
            f"postmaster@{HOST}",
        ]
        assert all(r.startswith("550 5.1.1") for r in await rcpt_replies(mx, refused))

    talk(go)


def test_another_report_address_and_none_at_all(gateway_db) -> None:
    async def go() -> None:
        mx = ReportWorld(gateway_db, "tls-reports").mx
        assert await rcpt_replies(mx, [f"tls-reports@{HOST}"]) == ["250 2.1.5 Recipient ok"]
        assert (await rcpt_replies(mx, [f"tlsrpt@{HOST}"]))[0].startswith("550 5.1.1")
        off = ReportWorld(gateway_db, "").mx  # inbound.tlsrpt_address = "": off
        assert (await rcpt_replies(off, [f"tlsrpt@{HOST}"]))[0].startswith("550 5.1.1")

    talk(go)


# -- keeping the report: metadata only, once ------------------------------------------------


def test_a_report_is_kept_as_metadata_once(gateway_db) -> None:
    async def go() -> None:
        w = ReportWorld(gateway_db)
        assert (await w.deliver(report_mail(a_report()), f"tlsrpt@{HOST}")).startswith("250 2.0.0")
        [kept] = await w.received.recent(30, now=END.timestamp())
        assert (kept.organization, kept.report_id, kept.contact_info) == (
            "Mail Corp",
            "2026-12-06T00:00:00Z_gw.test",
            "mailto:tls@mailcorp.example",
        )
        assert (kept.start, kept.end) == (START.timestamp(), END.timestamp())
        [policy] = kept.policies
        assert policy["policy_type"] == "sts" and policy["policy_domain"] == HOST
        assert policy["mx_host"] == [HOST] and (policy["successful"], policy["failed"]) == (41, 3)
        assert "policy_string" not in policy
        assert policy["failures"][0] == {
            "result_type": "certificate-expired",
            "sending_mta_ip": "198.51.100.1",
            "receiving_ip": "192.0.2.25",
            "receiving_mx_hostname": HOST,
            "failed_sessions": 2,
        }
        # The same report again (a retry by the reporting MTA): kept once, counted.
        assert (await w.deliver(report_mail(a_report()), f"TLSRPT@{HOST}")).startswith("250 2.0.0")
        assert len(await w.received.recent(30, now=END.timestamp())) == 1
        assert await w.counters.all() == {"tlsrpt_dropped:repeated": 1}
        # Another organization may use the same report-id.
        other = a_report()
        other = TlsReport("Other Org", other.start, other.end, other.contact_info, other.report_id, other.policies)
        await w.deliver(report_mail(other), f"tlsrpt@{HOST}")
        assert len(await w.received.recent(30, now=END.timestamp())) == 2

    asyncio.run(go())


def test_one_client_network_cannot_fill_the_table(gateway_db) -> None:
    """Organization and report-id are the sender's to make up: at most N reports a day per
    client network (IPv4 /24); the rest is answered 250, dropped and counted."""

    def made_up(i: int) -> TlsReport:
        r = a_report()
        return TlsReport(f"Org {i}", r.start, r.end, r.contact_info, f"id-{i}", r.policies)

    async def go() -> None:
        w = ReportWorld(gateway_db, per_client_per_day=3)
        for i in range(5):
            reply = await w.deliver(report_mail(made_up(i)), f"tlsrpt@{HOST}", client_ip=f"198.51.100.{i}")
            assert reply.startswith("250 2.0.0")
        assert len(await w.received.recent(30, now=END.timestamp())) == 3
        assert await w.counters.all() == {"tlsrpt_dropped:over_limit": 2}
        # Another network still gets its reports kept; IPv6 counts per /48.
        assert (await w.deliver(report_mail(made_up(9)), f"tlsrpt@{HOST}", client_ip="203.0.113.7")).startswith("250")
        v6 = ("2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:4::1", "2001:db8:2::1")
        for i, ip in enumerate(v6):
            await w.deliver(report_mail(made_up(20 + i)), f"tlsrpt@{HOST}", client_ip=ip)
        assert len(await w.received.recent(30, now=END.timestamp())) == 3 + 1 + 3 + 1
        assert await w.counters.all() == {"tlsrpt_dropped:over_limit": 3}

    asyncio.run(go())


def test_client_networks() -> None:
    assert client_network("198.51.100.77") == "198.51.100.0/24"
    assert client_network("::ffff:198.51.100.77") == "198.51.100.0/24"
    assert client_network("2001:db8:1:2:3::4") == "2001:db8:1::/48"
    assert client_network("not an address") == "not an address"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (mail_with("application/tlsrpt+gzip", bomb()), "oversized"),
        (mail_with("application/json", a_report().to_json()), "not_a_report"),
        (b"Subject: hello\r\n\r\nno report here\r\n", "not_a_report"),
        (mail_with("application/tlsrpt+json", b'{"policies": []}'), "unreadable"),
    ],
)
def test_mail_without_a_readable_report_is_answered_250_counted_and_not_kept(
    gateway_db, message: bytes, reason: str
) -> None:
    async def go() -> None:
        w = ReportWorld(gateway_db)
        assert (await w.deliver(message, f"tlsrpt@{HOST}")).startswith("250 2.0.0")
        assert await w.received.recent(36500) == []
        assert await w.counters.all() == {f"tlsrpt_dropped:{reason}": 1}

    asyncio.run(go())


def test_a_message_to_a_bounce_address_and_the_report_address_reaches_both(gateway_db) -> None:
    async def go() -> None:
        w = ReportWorld(gateway_db)
        mid, _ = await w.sent("dr@clinic.test")
        reply = await w.deliver(
            report_mail(a_report()), f"tlsrpt@{HOST}", bounce_address(KEY, mid, "dr@clinic.test", HOST)
        )
        assert reply.startswith("250 2.0.0")
        assert len(await w.received.recent(30, now=END.timestamp())) == 1
        assert (await w.store.message(mid)).recipients[0].status.value == "bounced"

    asyncio.run(go())


def test_what_is_kept_is_bounded(gateway_db) -> None:
    """Hostile values: control characters gone, strings cut, at most MAX_FAILURES details."""
    long = "x" * 10_000
    many = tuple(
        (FailureDetail(ResultType.VALIDATION_FAILURE, f"198.51.100.{i % 250}", f"mx{i}.{HOST}"), 1)
        for i in range(MAX_FAILURES + 50)
    )
    report = TlsReport(
        "Evil\r\nCorp" + long,
        START,
        END,
        long,
        "r" + long,
        (PolicyResult(ReportPolicy(PolicyType.TLSA, HOST, (), tuple([long] * 100)), 0, len(many), many),),
    )

    async def go() -> None:
        store = TlsReportsReceived(gateway_db)
        assert await store.add(report) is Kept.KEPT
        [kept] = await store.recent(30, now=END.timestamp())
        assert kept.organization.startswith("EvilCorp") and len(kept.organization) == 255
        assert len(kept.report_id) == 255 and len(kept.contact_info) == 255
        assert len(kept.policies[0]["failures"]) == MAX_FAILURES
        assert len(kept.policies[0]["mx_host"]) == 20 and all(len(h) == 255 for h in kept.policies[0]["mx_host"])
        assert kept.policies[0]["failed"] == MAX_FAILURES + 50  # the report's own total

    asyncio.run(go())


def test_the_listing_row_sums_failures_by_result_type_commonest_first() -> None:
    report = a_report(failures=9)
    policy = report.policies[0]
    row_report = {
        "start": "2026-12-06T00:00:00Z",
        "end": "2026-12-06T23:59:59Z",
        "organization": "Mail Corp",
        "report_id": "r",
        "received_at": "2026-12-07T01:00:00Z",
        "policies": [
            {
                "policy_domain": HOST,
                "policy_type": "sts",
                "successful": policy.successful,
                "failed": 9,
                "failures": [
                    {"result_type": "starttls-not-supported", "failed_sessions": 1},
                    {"result_type": "certificate-expired", "failed_sessions": 5},
                    {"result_type": "starttls-not-supported", "failed_sessions": 3},
                ],
            }
        ],
    }
    row = received_row(row_report)
    assert row["policies"][0]["top_failures"] == [
        {"result_type": "certificate-expired", "sessions": 5},
        {"result_type": "starttls-not-supported", "sessions": 4},
    ]


def test_the_dns_record_that_asks_for_reports() -> None:
    """RFC 8460 §3: `_smtp._tls.<domain>` TXT `v=TLSRPTv1; rua=mailto:…`."""
    assert tlsrpt_record("GW.example.nl.", "tlsrpt") == (
        "_smtp._tls.gw.example.nl",
        "v=TLSRPTv1; rua=mailto:tlsrpt@gw.example.nl",
    )
    assert json.dumps(tlsrpt_record("gw.test", "x"))  # plain strings
