"""SMTP TLS Reporting (RFC 8460): the record (§3), the report (§4.4), its delivery (§5)."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from datetime import UTC, datetime

import pytest

from secumail.mail.tlsrpt import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    ReportPolicy,
    ResultType,
    TlsReport,
    TlsReportBuilder,
    TlsRptError,
    gzip_report,
    parse_report,
    parse_tlsrpt_record,
    report_filename,
    report_mail_headers,
    report_message,
)

START = datetime(2016, 4, 1, tzinfo=UTC)
END = datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC)

# The §4.4 example report (its three failure details, as the RFC prints them).
RFC_EXAMPLE = {
    "organization-name": "Company-X",
    "date-range": {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    },
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": [
                    "version: STSv1",
                    "mode: testing",
                    "mx: *.mail.company-y.example",
                    "max_age: 86400",
                ],
                "policy-domain": "company-y.example",
                "mx-host": ["*.mail.company-y.example"],
            },
            "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "2001:db8:abcd:0012::1",
                    "receiving-mx-hostname": "mx1.mail.company-y.example",
                    "failed-session-count": 100,
                },
                {
                    "result-type": "starttls-not-supported",
                    "sending-mta-ip": "2001:db8:abcd:0013::1",
                    "receiving-mx-hostname": "mx2.mail.company-y.example",
                    "receiving-ip": "203.0.113.56",
                    "failed-session-count": 200,
                    "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
                },
                {
                    "result-type": "validation-failure",
                    "sending-mta-ip": "198.51.100.62",
                    "receiving-ip": "203.0.113.58",
                    "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                    "failed-session-count": 3,
                    "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
                },
            ],
        }
    ],
}

STS = ReportPolicy(
    PolicyType.STS,
    "company-y.example",
    ("version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"),
    ("*.mail.company-y.example",),
)


def rfc_example_builder() -> TlsReportBuilder:
    builder = TlsReportBuilder("Company-X", "sts-reporting@company-x.example", START, END)
    builder.add_success(STS, 5326)
    builder.add_failure(
        STS,
        FailureDetail(
            ResultType.CERTIFICATE_EXPIRED, "2001:db8:abcd:0012::1", "mx1.mail.company-y.example"
        ),
        100,
    )
    starttls = FailureDetail(
        ResultType.STARTTLS_NOT_SUPPORTED,
        sending_mta_ip="2001:db8:abcd:0013::1",
        receiving_mx_hostname="mx2.mail.company-y.example",
        receiving_ip="203.0.113.56",
        additional_information="https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
    )
    for _ in range(200):  # one session at a time, as the deliver stage reports them
        builder.add_failure(STS, starttls)
    builder.add_failure(
        STS,
        FailureDetail(
            ResultType.VALIDATION_FAILURE,
            sending_mta_ip="198.51.100.62",
            receiving_mx_hostname="mx-backup.mail.company-y.example",
            receiving_ip="203.0.113.58",
            failure_reason_code="X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
        ),
        3,
    )
    return builder


# --- §4.4: the report ------------------------------------------------------------------


def test_builder_reproduces_rfc_example() -> None:
    report = rfc_example_builder().build(
        "company-y.example", "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    )
    assert json.loads(report.to_json()) == RFC_EXAMPLE


def test_rfc_example_round_trips() -> None:
    parsed = parse_report(json.dumps(RFC_EXAMPLE))
    assert parsed.policies[0].failed == 303
    assert parsed.policies[0].failures[1] == (
        FailureDetail(
            "starttls-not-supported",
            sending_mta_ip="2001:db8:abcd:0013::1",
            receiving_mx_hostname="mx2.mail.company-y.example",
            receiving_ip="203.0.113.56",
            additional_information="https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
        ),
        200,
    )
    assert json.loads(parsed.to_json()) == RFC_EXAMPLE
    built = rfc_example_builder().build("company-y.example", "5065427c-23d3-47ca-b6e0-946ea0e8c4be")
    assert parse_report(built.to_json()) == built
    assert parse_report(gzip_report(built.to_json())) == built  # §5.1: gzip undone


def test_one_report_per_policy_domain_with_each_policy_applied() -> None:
    """§4: a report covers one policy domain; it lists every policy applied to it."""
    builder = TlsReportBuilder("Secumail", "tlsrpt@gw.example", START, END)
    dane = ReportPolicy(PolicyType.TLSA, "a.example", ("3 1 1 abcd",), ("mx.a.example",))
    none = ReportPolicy(PolicyType.NO_POLICY_FOUND, "b.example")
    builder.add_success(dane, 4)
    builder.add_failure(
        dane, FailureDetail(ResultType.TLSA_INVALID, "192.0.2.1", "mx.a.example"), 2
    )
    builder.add_success(none)
    assert builder.policy_domains() == ["a.example", "b.example"]
    doc = json.loads(builder.build("a.example", "r1").to_json())
    assert [p["policy"]["policy-type"] for p in doc["policies"]] == ["tlsa"]
    assert doc["policies"][0]["summary"] == {
        "total-successful-session-count": 4,
        "total-failure-session-count": 2,
    }
    b = json.loads(builder.build("b.example", "r2").to_json())
    assert b["policies"] == [
        {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "b.example"},
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
        }
    ]
    assert builder.build("c.example", "r3").policies == ()


def test_report_fields_and_types() -> None:
    """§4.4: RFC 3339 date-times in UTC, integer counts, mandatory top-level keys."""
    report = rfc_example_builder().build("company-y.example", "id-1")
    doc = json.loads(report.to_json())
    assert set(doc) == {"organization-name", "date-range", "contact-info", "report-id", "policies"}
    assert doc["date-range"]["end-datetime"] == "2016-04-01T23:59:59Z"
    detail = doc["policies"][0]["failure-details"][0]
    assert isinstance(detail["failed-session-count"], int)
    assert "receiving-ip" not in detail  # optional fields are left out, not empty


def test_builder_refuses_inverted_range() -> None:
    with pytest.raises(ValueError, match="end"):
        TlsReportBuilder("x", "y@z.example", END, START)


def variant(**changes: object) -> bytes:
    """The RFC example with top-level keys replaced."""
    return json.dumps({**RFC_EXAMPLE, **changes}).encode()


FIRST = RFC_EXAMPLE["policies"][0]
NAIVE_RANGE = {"start-datetime": "2016-04-01T00:00:00", "end-datetime": "2016-04-01T23:59:59"}
NEGATIVE = {"total-successful-session-count": -1, "total-failure-session-count": 0}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        variant(**{"report-id": 5}),
        variant(**{"date-range": {"start-datetime": "yesterday", "end-datetime": "x"}}),
        variant(**{"date-range": NAIVE_RANGE}),  # §4.4: RFC 3339 date-times carry an offset
        variant(
            policies=[{"policy": {"policy-type": "dmarc", "policy-domain": "x"}, "summary": {}}]
        ),
        variant(policies=[{**FIRST, "summary": NEGATIVE}]),
        b"\x1f\x8b broken gzip",
    ],
)
def test_parse_report_rejects_malformed(data: bytes) -> None:
    with pytest.raises(TlsRptError):
        parse_report(data)


# --- §3: the reporting record ----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "rua"),
    [
        (
            ["v=TLSRPTv1; rua=mailto:reports@example.com"],
            ["mailto:reports@example.com"],
        ),  # §3 example
        (
            ["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"],
            ["https://reporting.example.com/v1/tlsrpt"],
        ),
        (
            ["v=TLSRPTv1;rua=mailto:a@example.com, https://r.example/p?x=1;"],
            ["mailto:a@example.com", "https://r.example/p?x=1"],
        ),
        (
            ["v=spf1 -all", "v=TLSRPTv1; future=1; rua=mailto:a@example.com"],
            ["mailto:a@example.com"],
        ),
        # only mailto: and https: are defined (§3); other schemes are skipped
        (["v=TLSRPTv1; rua=ftp://x.example/, mailto:a@example.com"], ["mailto:a@example.com"]),
        ([], []),
        (["v=spf1 -all"], []),
        (["v=TLSRPTv10; rua=mailto:a@example.com"], []),
    ],
)
def test_tlsrpt_record(values: list[str], rua: list[str]) -> None:
    assert parse_tlsrpt_record(values) == rua


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (
            ["v=TLSRPTv1; rua=mailto:a@x.example", "v=TLSRPTv1; rua=mailto:b@x.example"],
            "2 TLSRPT records",
        ),
        (["v=TLSRPTv1"], "no fields"),
        (["v=TLSRPTv1; future=1"], "no rua"),
        (["v=TLSRPTv1; rua="], "not a comma-separated list"),
        (["v=TLSRPTv1; rua=mailto:a@x.example; rua=mailto:b@x.example"], "more than once"),
        (["v=TLSRPTv1; rua=ftp://x.example/"], "no mailto: or https:"),
        (["v=TLSRPTv1; rua=not a uri"], "not a comma-separated list"),
        (["v=TLSRPTv1; bad field"], "invalid field"),
    ],
)
def test_bad_tlsrpt_record(values: list[str], why: str) -> None:
    with pytest.raises(TlsRptError, match=why):
        parse_tlsrpt_record(values)


# --- §5: delivering the report ---------------------------------------------------------


def test_report_filename() -> None:
    """§5.1: sender!policy-domain!begin!end!unique-id.json.gz with Unix timestamps."""
    begin = datetime.fromtimestamp(1470013207, UTC)
    end = datetime.fromtimestamp(1470186007, UTC)
    assert (
        report_filename("mail.sender.example", "example.com", begin, end, "001")
        == "mail.sender.example!example.com!1470013207!1470186007!001.json.gz"
    )
    assert (
        report_filename("mail.sender.example", "example.com", begin, end, gzipped=False)
        == "mail.sender.example!example.com!1470013207!1470186007.json"
    )
    with pytest.raises(ValueError, match="unique-id"):
        report_filename("a.example", "b.example", begin, end, "no-dashes")
    with pytest.raises(ValueError, match="domain"):
        report_filename("a!b.example", "b.example", begin, end)


def test_gzip_is_deterministic() -> None:
    body = b'{"x": 1}'
    assert gzip.decompress(gzip_report(body)) == body
    assert gzip_report(body) == gzip_report(body)


def test_report_mail_headers() -> None:
    """§5.3: Subject form, TLS-Report-Domain/-Submitter, multipart/report tlsrpt."""
    headers = report_mail_headers(
        "example.net", "mail.sender.example.com", "735ff.e317+bf22029@example.net"
    )
    assert headers == [
        (
            "Subject",
            "Report Domain: example.net Submitter: mail.sender.example.com "
            "Report-ID: <735ff.e317+bf22029@example.net>",
        ),
        ("TLS-Report-Domain", "example.net"),
        ("TLS-Report-Submitter", "mail.sender.example.com"),
        ("Content-Type", 'multipart/report; report-type="tlsrpt"'),
    ]
    with pytest.raises(ValueError, match="unusable"):
        report_mail_headers("example.net\r\nBcc: x@evil.example", "s.example", "id")


def test_report_message_reads_back() -> None:
    """§5.3: a multipart/report; report-type="tlsrpt" with the gzipped JSON attached."""
    report = rfc_example_builder().build("company-y.example", "5065427c")
    msg = report_message(
        report,
        policy_domain="company-y.example",
        submitter="gw.company-x.example",
        from_addr="tlsrpt@gw.company-x.example",
        to_addrs=["reports@company-y.example"],
        message_id="<r1@gw.company-x.example>",
        date=datetime(2016, 4, 2, 1, 0, tzinfo=UTC),
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    assert parsed.get_boundary()
    assert parsed["TLS-Report-Domain"] == "company-y.example"
    assert parsed["TLS-Report-Submitter"] == "gw.company-x.example"
    assert str(parsed["Subject"]) == (
        "Report Domain: company-y.example Submitter: gw.company-x.example Report-ID: <5065427c>"
    )
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    assert (
        parts[1].get_filename()
        == "gw.company-x.example!company-y.example!1459468800!1459555199.json.gz"
    )
    assert parse_report(parts[1].get_content()) == report


def test_result_types_are_the_rfc_set() -> None:
    """§4.3: the closed set of result types, spelled as the RFC spells them."""
    assert {str(r) for r in ResultType} == {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }


def test_policy_result_counts_failures() -> None:
    result = PolicyResult(STS, 1, 2, ((FailureDetail("validation-failure"), 2),))
    report = TlsReport("o", START, END, "c@example.com", "r", (result,))
    assert parse_report(report.to_json()) == report
