"""TLS reports (RFC 8460): counted at delivery, sent once per day and domain to its rua."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import time
from collections.abc import Callable

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.https import HttpsServer

RUA = '"v=TLSRPTv1; rua=mailto:tls@reports.test,https://rua.reports.test/tlsrpt"'


def _validate_report(report: dict, domain: str) -> None:
    """The shape of RFC 8460 §4.4 (its JSON schema's required members)."""
    assert set(report) >= {
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    }
    assert set(report["date-range"]) == {"start-datetime", "end-datetime"}
    for entry in report["policies"]:
        assert entry["policy"]["policy-domain"] == domain
        assert entry["policy"]["policy-type"] in ("sts", "tlsa", "no-policy-found")
        summary = entry["summary"]
        assert set(summary) == {"total-successful-session-count", "total-failure-session-count"}
        failures = entry.get("failure-details", [])
        assert (
            sum(f["failed-session-count"] for f in failures)
            == summary["total-failure-session-count"]
        )
        for f in failures:
            assert "result-type" in f and "receiving-mx-hostname" in f


def _notice_id(gw: GatewayProcess, qid: str) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for e in gw.message(qid)["events"]:
            if e["kind"] == "notice_failed":
                return e["detail"]["notice_id"]
        time.sleep(0.1)
    raise AssertionError(f"no notice for {qid}")


def test_reports_go_to_mailto_and_https_rua_once(
    make_gateway: Callable[..., GatewayProcess],
    dns: AuthoritativeDns,
    world: World,
    sts_port: int,
    sts_server: Callable[[], HttpsServer],
) -> None:
    gw = make_gateway(tlsrpt__https_port=sts_port).start()
    sender_mx = world.domain("hospital.test")
    who: Customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    reports_mx = world.domain("reports.test")
    https = sts_server()
    dns.add("rua.reports.test", "A", World.STS_IP)
    https.add_certificate("rua.reports.test", world.ca.issue("rua.reports.test"))
    https.set_route("/tlsrpt", 200, body="thanks", host="rua.reports.test")
    world.domain("rpt.test")
    world.mta_sts("rpt.test", policy_id="r1")
    dns.add("_smtp._tls.rpt.test", "TXT", RUA)
    world.domain("broken.test", "expired")
    dns.add("_smtp._tls.broken.test", "TXT", RUA)
    gw.wait_status(gw.send(who, ["a@rpt.test"]), {"delivered"})
    refused = gw.send(who, ["b@broken.test"])
    gw.wait_status(refused, {"refused_insecure"})
    sender_mx.wait_for(1)
    notice = _notice_id(gw, refused)
    gw.wait_status(notice, {"delivered"})  # its session is counted too, before reporting

    sent = {s["domain"]: s["outcome"] for s in gw.cli("tlsrpt", "send", "--day", "today")}
    assert {"broken.test", "rpt.test"} <= set(sent)
    assert sent["hospital.test"] == "no rua published", "the notice to the sender counted too"
    mails = reports_mx.wait_for(2, timeout=20)
    by_domain = {}
    for m in mails:
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        assert msg["TLS-Required"] == "No", "RFC 8460 §5.1"
        assert (
            msg.get_content_type() == "multipart/report"
            and msg.get_param("report-type") == "tlsrpt"
        )
        attachment = next(
            p for p in msg.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip"
        )
        report = json.loads(gzip.decompress(attachment.get_content()))
        by_domain[msg["TLS-Report-Domain"]] = report
    _validate_report(by_domain["rpt.test"], "rpt.test")
    _validate_report(by_domain["broken.test"], "broken.test")
    sts_entry = by_domain["rpt.test"]["policies"][0]
    assert sts_entry["policy"]["policy-type"] == "sts"
    assert sts_entry["summary"]["total-successful-session-count"] >= 1
    broken = by_domain["broken.test"]["policies"][0]
    assert broken["summary"]["total-failure-session-count"] == 1
    assert broken["failure-details"][0]["result-type"] == "certificate-expired"

    posts = [r for r in https.requests if r.method == "POST" and r.path == "/tlsrpt"]
    assert len(posts) == 2
    assert posts[0].headers["content-type"] == "application/tlsrpt+gzip"
    posted = [json.loads(gzip.decompress(p.body)) for p in posts]
    for report in posted:
        _validate_report(report, report["policies"][0]["policy"]["policy-domain"])
    assert sorted(r["policies"][0]["policy"]["policy-domain"] for r in posted) == [
        "broken.test",
        "rpt.test",
    ]

    again = {s["domain"] for s in gw.cli("tlsrpt", "send", "--day", "today")}
    assert again.isdisjoint({"rpt.test", "broken.test", "hospital.test"}), (
        "each day and domain once"
    )
