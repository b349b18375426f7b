"""Issue 14: TLS reports (RFC 8460) about mail to the gateway, through the inbound MX of
the real `secumail serve`.

A reporting MTA mails its daily report (§5.3, built here with Secumail's own builders, as
an MTA sends it) to `tlsrpt@<server.hostname>`; `secumail tlsrpt received` then lists it
with its counts. The same report twice is listed once; a gzip bomb is answered 250,
kept nowhere and counted (`secumail queue`).
"""

from __future__ import annotations

import gzip
import re
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from secumail.mail.tlsrpt import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    ReportPolicy,
    ResultType,
    TlsReport,
    report_message,
)
from tests.e2e.api_client import Api
from tests.e2e.world import GATEWAY_HOST, GatewayProcess
from tests.harness import free_port

END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = END - timedelta(days=1)


@pytest.fixture
def inbound_port() -> int:
    return free_port()


@pytest.fixture
def gw(make_gateway, inbound_port: int) -> GatewayProcess:
    gateway = make_gateway(inbound__listen=[f"127.0.0.1:{inbound_port}"]).start()
    gateway._wait_listening(inbound_port)
    return gateway


def the_report() -> TlsReport:
    policy = ReportPolicy(PolicyType.STS, GATEWAY_HOST, ("version: STSv1", "mode: enforce"), (GATEWAY_HOST,))
    return TlsReport(
        "Mail Corp",
        START,
        END,
        "mailto:tls-admin@mailcorp.test",
        f"{START:%Y-%m-%d}_{GATEWAY_HOST}",
        (
            PolicyResult(
                policy,
                120,
                7,
                (
                    (FailureDetail(ResultType.CERTIFICATE_EXPIRED, "198.51.100.1", GATEWAY_HOST), 5),
                    (FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, "198.51.100.1", GATEWAY_HOST), 2),
                ),
            ),
        ),
    )


def report_mail(report: TlsReport) -> EmailMessage:
    return report_message(
        report,
        policy_domain=GATEWAY_HOST,
        submitter="mailcorp.test",
        from_addr="noreply-tlsrpt@mailcorp.test",
        to_addrs=[f"tlsrpt@{GATEWAY_HOST}"],
        message_id="<report-1@mailcorp.test>",
        date=END + timedelta(hours=1),
    )


def send(port: int, message: bytes, rcpt: str = f"tlsrpt@{GATEWAY_HOST}") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.mailcorp.test", timeout=20) as s:
        s.ehlo()
        assert s.mail("noreply-tlsrpt@mailcorp.test")[0] == 250
        code, text = s.rcpt(rcpt)
        assert code == 250, (code, text)
        return s.data(message)


def wait_listed(gw: GatewayProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(listed := gw.cli("tlsrpt", "received")) < count:
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)
    return listed


def test_a_report_mailed_to_the_gateway_is_listed_with_its_counts(
    gw: GatewayProcess, inbound_port: int
) -> None:
    assert gw.cli("tlsrpt", "received") == []
    code, text = send(inbound_port, report_mail(the_report()).as_bytes())
    assert code == 250, text
    [listed] = wait_listed(gw, 1)
    assert listed["organization"] == "Mail Corp"
    assert listed["start"] == f"{START:%Y-%m-%dT%H:%M:%SZ}" and listed["end"] == f"{END:%Y-%m-%dT%H:%M:%SZ}"
    [policy] = listed["policies"]
    assert (policy["policy_domain"], policy["policy_type"]) == (GATEWAY_HOST, "sts")
    assert (policy["successful"], policy["failed"]) == (120, 7)
    assert policy["top_failures"] == [
        {"result_type": "certificate-expired", "sessions": 5},
        {"result_type": "starttls-not-supported", "sessions": 2},
    ]
    # The reporting MTA sends it again (the recipient side's case does not matter): once.
    assert send(inbound_port, report_mail(the_report()).as_bytes(), f"TLSRPT@{GATEWAY_HOST}")[0] == 250
    time.sleep(1.0)
    assert len(gw.cli("tlsrpt", "received")) == 1
    assert gw.cli("queue")["tls_reports_dropped"] == {"repeated": 1}
    # the human listing
    human = gw.cli_process("tlsrpt", "received")
    assert human.returncode == 0, human
    assert "Mail Corp" in human.stdout and "ok 120 failed 7 (certificate-expired 5" in human.stdout


def test_a_gzip_bomb_is_answered_250_kept_nowhere_and_counted(
    gw: GatewayProcess, inbound_port: int
) -> None:
    bomb = gzip.compress(b'{"organization-name": "' + b"A" * (64 * 1024 * 1024) + b'"}', compresslevel=9)
    message = report_mail(the_report())
    attachment = next(p for p in message.iter_attachments())
    attachment.set_content(bomb, maintype="application", subtype="tlsrpt+gzip", filename="bomb.json.gz")
    code, text = send(inbound_port, message.as_bytes())
    assert code == 250, text
    deadline = time.monotonic() + 10
    while gw.cli("queue")["tls_reports_dropped"] != {"oversized": 1}:
        assert time.monotonic() < deadline, gw.cli("queue")
        time.sleep(0.2)
    assert gw.cli("tlsrpt", "received") == []
    assert re.search(r'msg="tls report dropped" reason=oversized', gw.log())
    assert 'secumail_tls_reports_dropped_total{reason="oversized"} 1' in Api(gw).client.get("/metrics").text
    # the gateway still takes the next, good report
    assert send(inbound_port, report_mail(the_report()).as_bytes())[0] == 250
    assert len(wait_listed(gw, 1)) == 1


def test_other_addresses_at_the_gateway_are_refused(gw: GatewayProcess, inbound_port: int) -> None:
    with smtplib.SMTP("127.0.0.1", inbound_port, local_hostname="mx.mailcorp.test", timeout=20) as s:
        s.ehlo()
        s.mail("noreply-tlsrpt@mailcorp.test")
        code, text = s.rcpt(f"tls-reports@{GATEWAY_HOST}")
        assert (code, text[:5]) == (550, b"5.1.1")
