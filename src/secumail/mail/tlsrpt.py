"""SMTP TLS Reporting (RFC 8460): the reporting record, the aggregate report, its delivery.

A recipient domain asks for reports with a TXT record at ``_smtp._tls.<domain>``
(``v=TLSRPTv1; rua=mailto:...,https://...``, §3). A sending MTA counts, per policy domain
and per policy it applied (``sts``, ``tlsa`` or ``no-policy-found``), the sessions that
succeeded and those that failed, with failure details (§4), and once a day sends one JSON
report per policy domain (§4.4), gzipped under a fixed file name (§5.1), by mail as a
``multipart/report; report-type="tlsrpt"`` (§5.3) or by HTTPS POST (§5.4).

`ResultType` is the closed set of §4.3 result types; the MTA-STS and DANE modules use it
for their failures so a failure can be reported as it happened.

Sans-I/O: `TlsReportBuilder` accumulates counts, `TlsReport` serialises and parses the
JSON, and the helpers return bytes and strings; sending is someone else's job.
"""

from __future__ import annotations

import enum
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any


class TlsRptError(ValueError):
    """A reporting record or a report does not follow RFC 8460."""


class ResultType(enum.StrEnum):
    """RFC 8460 §4.3 result types (the ``result-type`` of a failure detail)."""

    # §4.3.1: negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1: DANE policy failures
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2: MTA-STS policy failures
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


class PolicyType(enum.StrEnum):
    """RFC 8460 §4.4 ``policy-type``."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY_FOUND = "no-policy-found"


# --- the reporting record (§3) -------------------------------------------------------

_TLSRPT_CANDIDATE = re.compile(r"v=TLSRPTv1[ \t]*(;|$)")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")  # no "," ";" SP
REPORT_URI_SCHEMES = ("mailto", "https")  # §3: the two defined rua schemes


def parse_tlsrpt_record(values: list[str]) -> list[str]:
    """The ``rua`` URIs of the TLSRPT record among the TXT ``values`` of ``_smtp._tls.<domain>``.

    Each value is one TXT record with its strings already joined. Returns ``[]`` when no
    record starts with ``v=TLSRPTv1`` (the domain wants no reports). Raises `TlsRptError`
    when there are several such records or the one record is invalid: §3 says to treat the
    domain as not implementing TLSRPT then, and the error says why.
    """
    # §3: records not starting with "v=TLSRPTv1;" are discarded; exactly one must remain.
    candidates = [v for v in values if _TLSRPT_CANDIDATE.match(v)]
    if not candidates:
        return []
    if len(candidates) > 1:
        raise TlsRptError(f"{len(candidates)} TLSRPT records; exactly one is allowed")
    fields = _split_fields(candidates[0], "v=TLSRPTv1")
    rua: list[str] | None = None
    for name, value in fields:
        if name != "rua":
            continue  # §3: unknown fields are ignored
        if rua is not None:
            raise TlsRptError("rua= appears more than once")
        rua = [u.strip(" \t") for u in value.split(",")]
        if not all(_URI.fullmatch(u) for u in rua):
            raise TlsRptError(f"rua= is not a comma-separated list of URIs: {value!r}")
    if rua is None:
        raise TlsRptError("the TLSRPT record has no rua=")
    usable = [u for u in rua if u.split(":", 1)[0].lower() in REPORT_URI_SCHEMES]
    if not usable:
        raise TlsRptError(f"no mailto: or https: URI in rua= {rua}")
    return usable


def _split_fields(record: str, version: str) -> list[tuple[str, str]]:
    """``v=...; key=value; ...`` (§3 ABNF: *WSP ";" *WSP between fields, one trailing ";")."""
    parts = [p.strip(" \t") for p in record.split(";")]
    if parts[0] != version:
        raise TlsRptError(f"record must start with {version!r}")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # the optional final delimiter
    out: list[tuple[str, str]] = []
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if name == "rua" and eq:
            out.append((name, value))  # URIs are checked by the caller
        elif not eq or not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            raise TlsRptError(f"invalid field {part!r}")
        else:
            out.append((name, value))
    if not out:
        raise TlsRptError("the record has no fields after the version")
    return out


# --- the report (§4.4) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """The ``policy`` object of §4.4: what the sender applied to the policy domain."""

    policy_type: PolicyType
    policy_domain: str
    policy_string: tuple[str, ...] = ()  # the policy's lines (sts) or TLSA records (tlsa)
    mx_host: tuple[str, ...] = ()  # MX patterns (sts) or the MX host names (tlsa)


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One kind of failed session (§4.4 ``failure-details``), without its count."""

    result_type: ResultType | str
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""  # §4.4: a URI with more information
    failure_reason_code: str = ""  # §4.4: free text, e.g. the TLS library's error


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One element of ``policies``: a policy, its summary and its failure details."""

    policy: ReportPolicy
    successful: int
    failed: int
    failures: tuple[tuple[FailureDetail, int], ...] = ()


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DETAIL_KEYS = (
    ("sending_mta_ip", "sending-mta-ip"),
    ("receiving_mx_hostname", "receiving-mx-hostname"),
    ("receiving_mx_helo", "receiving-mx-helo"),
    ("receiving_ip", "receiving-ip"),
    ("additional_information", "additional-information"),
    ("failure_reason_code", "failure-reason-code"),
)


@dataclass(frozen=True, slots=True)
class TlsReport:
    """An aggregate report for one policy domain (§4.4)."""

    organization_name: str
    start: datetime
    end: datetime
    contact_info: str
    report_id: str
    policies: tuple[PolicyResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization-name": self.organization_name,
            "date-range": {
                "start-datetime": _rfc3339(self.start),
                "end-datetime": _rfc3339(self.end),
            },
            "contact-info": self.contact_info,
            "report-id": self.report_id,
            "policies": [_policy_result_dict(p) for p in self.policies],
        }

    def to_json(self) -> bytes:
        """The report as UTF-8 JSON (§4.4; the media type is application/tlsrpt+json)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode("utf-8")


def _policy_result_dict(result: PolicyResult) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "policy-type": str(result.policy.policy_type),
        "policy-domain": result.policy.policy_domain,
    }
    if result.policy.policy_string:
        policy["policy-string"] = list(result.policy.policy_string)
    if result.policy.mx_host:
        policy["mx-host"] = list(result.policy.mx_host)
    out: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": result.successful,
            "total-failure-session-count": result.failed,
        },
    }
    details = []
    for detail, count in result.failures:
        item: dict[str, Any] = {"result-type": str(detail.result_type)}
        for attr, key in _DETAIL_KEYS:
            if value := getattr(detail, attr):
                item[key] = value
        item["failed-session-count"] = count
        details.append(item)
    if details:
        out["failure-details"] = details
    return out


MAX_REPORT_JSON = 5 * 1024 * 1024  # bytes of report JSON read, after gzip is undone


class ReportTooLarge(TlsRptError):
    """The report's JSON is larger than the reader's cap (a decompression bomb, say)."""


def gunzip_report(data: bytes, limit: int = MAX_REPORT_JSON) -> bytes:
    """Undo §5.1's gzip incrementally, never holding more than ``limit`` bytes of output:
    a decompression bomb stops at the cap (`ReportTooLarge`); bad data is `TlsRptError`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer (RFC 1952)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise TlsRptError(f"bad gzip data: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise ReportTooLarge(f"report JSON over {limit} bytes")
    if not inflater.eof:
        raise TlsRptError("truncated gzip data")
    return out


def parse_report(data: bytes | str, *, max_size: int = MAX_REPORT_JSON) -> TlsReport:
    """Read a JSON report (gzip is detected and undone, at most ``max_size`` bytes of JSON);
    raises `TlsRptError` (`ReportTooLarge` over the cap)."""
    if isinstance(data, bytes) and data[:2] == b"\x1f\x8b":
        data = gunzip_report(data, max_size)
    if len(data) > max_size:
        raise ReportTooLarge(f"report JSON over {max_size} bytes")
    try:
        doc = json.loads(data)
        return TlsReport(
            organization_name=_str(doc, "organization-name"),
            start=_datetime(doc["date-range"], "start-datetime"),
            end=_datetime(doc["date-range"], "end-datetime"),
            contact_info=_str(doc, "contact-info"),
            report_id=_str(doc, "report-id"),
            policies=tuple(_parse_policy_result(p) for p in doc["policies"]),
        )
    except RecursionError as exc:  # JSON nested deeper than the interpreter's stack
        raise TlsRptError("not an RFC 8460 report: nested too deeply") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TlsRptError(f"not an RFC 8460 report: {exc}") from exc


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _count(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{key} must be a non-negative integer")
    return value


def _datetime(obj: Mapping[str, Any], key: str) -> datetime:
    moment = datetime.fromisoformat(_str(obj, key))
    if moment.tzinfo is None:
        raise ValueError(f"{key} has no time zone")
    return moment.astimezone(UTC)


def _parse_policy_result(item: Mapping[str, Any]) -> PolicyResult:
    policy = item["policy"]
    mx_host = policy.get("mx-host", [])
    if isinstance(mx_host, str):  # the RFC's Appendix B schema shows a string
        mx_host = [mx_host]
    failures = []
    for detail in item.get("failure-details", []):
        kwargs = {attr: str(detail.get(key, "")) for attr, key in _DETAIL_KEYS}
        failures.append(
            (
                FailureDetail(_str(detail, "result-type"), **kwargs),
                _count(detail, "failed-session-count"),
            )
        )
    return PolicyResult(
        policy=ReportPolicy(
            policy_type=PolicyType(_str(policy, "policy-type")),
            policy_domain=_str(policy, "policy-domain"),
            policy_string=tuple(str(s) for s in policy.get("policy-string", [])),
            mx_host=tuple(str(s) for s in mx_host),
        ),
        successful=_count(item["summary"], "total-successful-session-count"),
        failed=_count(item["summary"], "total-failure-session-count"),
        failures=tuple(failures),
    )


@dataclass
class _Tally:
    successful: int = 0
    failures: dict[FailureDetail, int] = field(default_factory=dict)


class TlsReportBuilder:
    """Counts sessions per policy over one reporting period; builds one report per domain."""

    def __init__(
        self, organization_name: str, contact_info: str, start: datetime, end: datetime
    ) -> None:
        if end <= start:
            raise ValueError("the report's end must lie after its start")
        self.organization_name = organization_name
        self.contact_info = contact_info
        self.start, self.end = start, end
        self._tallies: dict[ReportPolicy, _Tally] = {}

    def add_success(self, policy: ReportPolicy, count: int = 1) -> None:
        self._tallies.setdefault(policy, _Tally()).successful += count

    def add_failure(self, policy: ReportPolicy, detail: FailureDetail, count: int = 1) -> None:
        failures = self._tallies.setdefault(policy, _Tally()).failures
        failures[detail] = failures.get(detail, 0) + count

    def policy_domains(self) -> list[str]:
        """The domains something was counted for, each of which gets its own report."""
        return sorted({p.policy_domain for p in self._tallies})

    def build(self, policy_domain: str, report_id: str) -> TlsReport:
        """The report for ``policy_domain``: one ``policies`` entry per policy applied."""
        results = []
        for policy, tally in self._tallies.items():
            if policy.policy_domain != policy_domain:
                continue
            failures = tuple(tally.failures.items())
            results.append(
                PolicyResult(policy, tally.successful, sum(n for _, n in failures), failures)
            )
        return TlsReport(
            organization_name=self.organization_name,
            start=self.start,
            end=self.end,
            contact_info=self.contact_info,
            report_id=report_id,
            policies=tuple(results),
        )


# --- delivering the report (§5) --------------------------------------------------------

_UNIQUE_ID = re.compile(r"[A-Za-z0-9]+")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
MEDIA_TYPE_JSON = "application/tlsrpt+json"  # §6.4
MEDIA_TYPE_GZIP = "application/tlsrpt+gzip"  # §6.5


def gzip_report(report_json: bytes) -> bytes:
    """§5.1: reports are gzip-compressed; mtime 0 keeps the output reproducible."""
    return gzip.compress(report_json, mtime=0)


def report_filename(
    sender: str,
    policy_domain: str,
    begin: datetime,
    end: datetime,
    unique_id: str = "",
    *,
    gzipped: bool = True,
) -> str:
    """§5.1: ``sender!policy-domain!begin!end[!unique-id].json[.gz]`` (Unix seconds)."""
    for name in (sender, policy_domain):
        if not _DOMAIN.fullmatch(name):
            raise ValueError(f"not a domain name: {name!r}")
    if unique_id and not _UNIQUE_ID.fullmatch(unique_id):
        raise ValueError("§5.1: unique-id is letters and digits only")
    parts = [sender, policy_domain, str(_epoch(begin)), str(_epoch(end))]
    if unique_id:
        parts.append(unique_id)
    return "!".join(parts) + (".json.gz" if gzipped else ".json")


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def report_mail_headers(
    policy_domain: str, submitter: str, report_id: str
) -> list[tuple[str, str]]:
    """§5.3 header fields of the report mail, in order.

    The Content-Type is given without its boundary, which the MIME writer adds.
    """
    for value in (policy_domain, submitter, report_id):
        if any(c in value for c in "\r\n<>") or not value:
            raise ValueError(f"unusable header value {value!r}")
    return [
        (
            "Subject",
            f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report_id}>",
        ),
        ("TLS-Report-Domain", policy_domain),
        ("TLS-Report-Submitter", submitter),
        ("Content-Type", 'multipart/report; report-type="tlsrpt"'),
    ]


def report_message(
    report: TlsReport,
    *,
    policy_domain: str,
    submitter: str,
    from_addr: str,
    to_addrs: Iterable[str],
    message_id: str,
    date: datetime,
    unique_id: str = "",
) -> EmailMessage:
    """The §5.3 report mail: a short text part and the gzipped report as an attachment.

    DKIM signing (§5.3: required, RFC 6376 with ``s=tlsrpt`` keys allowed) is the caller's.
    """
    msg = EmailMessage()
    msg["From"] = from_addr
    msg["To"] = ", ".join(to_addrs)
    msg["Date"] = format_datetime(date if date.tzinfo else date.replace(tzinfo=UTC))
    msg["Message-ID"] = message_id
    headers = report_mail_headers(policy_domain, submitter, report.report_id)
    for name, value in headers[:3]:
        msg[name] = value
    msg.set_content(
        f"This is an aggregate TLS report from {submitter} for {policy_domain} (RFC 8460).\n"
    )
    msg.add_attachment(
        gzip_report(report.to_json()),
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=report_filename(submitter, policy_domain, report.start, report.end, unique_id),
    )
    # §5.3: multipart/report with report-type="tlsrpt" (RFC 6522), not multipart/mixed.
    msg.set_type("multipart/report")  # keeps the boundary
    msg.set_param("report-type", "tlsrpt")
    return msg
