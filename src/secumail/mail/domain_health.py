"""A customer domain's health: what its DNS says, judged the way internet.nl's mail test does.

Pure: `pipeline/domain_health.py` gathers the facts (DNS answers, the live probe of the
domain's own MX servers) and these functions judge them. Each check has an id close to
internet.nl's (`auth_spf_policy`, `starttls_dane_valid`, …), a status, the DNS name or host
it looked at, what it found (cleaned and bounded: DNS answers are the customer's, but
anyone on the path of an insecure lookup could have written them) and, through
`advice()`, what to do, in Dutch and English.

Two parts. *Sending* (the records Secumail's mail depends on: ownership token, DKIM keys,
SPF, DMARC): a `fail` there means mail from the domain is refused, unsigned or judged
badly by receivers, and raises the account's `domain_dns_error` alert. *Inbound* (the
customer's own MX servers: STARTTLS, TLS version, certificate, DNSSEC, DANE, MTA-STS,
TLSRPT) is shown in the report but raises no alert: it is not a record Secumail relies on.

Standards judged: SPF RFC 7208 §4.5 (one record), §4.6.4 (10 lookups), §5.1 (`all`),
§6.1 (`redirect=`); DMARC RFC 7489 §6.3 (tags), §6.4 (v=DMARC1 first), §6.6.3 (one record,
organisational domain), §3.1.1 (DKIM alignment), §3.1.2 (SPF alignment); DKIM RFC 6376
§3.6.1 (key record); DANE RFC 7672 §2.2, §3.1; MTA-STS RFC 8461 §3.1, §5; TLSRPT RFC 8460
§3.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from secumail.mail.alert_mail import AlertText

MAX_FOUND = 300  # characters of a DNS answer shown (a DKIM key is ~410: shortened)
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but weaker than it should be (recommended)
    FAIL = "fail"  # broken
    INFO = "info"  # a fact worth knowing, nothing to do


class Part(enum.StrEnum):
    SENDING = "sending"  # what Secumail's mail relies on: a failure raises the alert
    INBOUND = "inbound"  # the customer's own MX: shown, not alerted


@dataclass(frozen=True, slots=True)
class HealthCheck:
    id: str
    part: Part
    status: Status
    record: str  # the DNS name or host looked at
    found: str = ""  # what was there, plain text, cleaned
    problem: str = ""  # why it is not ok: a key of the advice texts ("" when ok)
    expected: str = ""  # what should be there, when Secumail knows it

    def __post_init__(self) -> None:
        object.__setattr__(self, "found", clean(self.found))
        object.__setattr__(self, "record", clean(self.record, 255))

    @property
    def key(self) -> str:
        """The check of one record: `auth_dkim_exist:sm202612r._domainkey.hospital.test`."""
        return f"{self.id}:{self.record}"


# Checks whose failure always raises the alert: without them the domain does not send
# (ownership) or its mail is not signed (a DKIM key Secumail signs with).
REQUIRED = frozenset({"secumail_ownership", "auth_dkim_exist"})


@dataclass(slots=True)
class HealthReport:
    """The checks of one round. `watched` holds the keys of the sending checks that were ok
    in this or an earlier round: a record that worked and now fails is *broken* (the
    alert), a recommended record never published (SPF, DMARC) is shown, not alerted."""

    domain: str
    checked_at: float
    checks: list[HealthCheck] = field(default_factory=list)
    watched: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.watched = self.watched | {
            c.key for c in self.checks if c.part is Part.SENDING and c.status is Status.OK
        }

    def alerting(self, check: HealthCheck) -> bool:
        return (
            check.part is Part.SENDING
            and check.status is Status.FAIL
            and (check.id in REQUIRED or check.key in self.watched)
        )

    @property
    def problems(self) -> list[HealthCheck]:
        """The broken sending records: what the `domain_dns_error` alert is about."""
        return [c for c in self.checks if self.alerting(c)]

    @property
    def status(self) -> Status:
        statuses = {c.status for c in self.checks}
        for s in (Status.FAIL, Status.WARN):
            if s in statuses:
                return s
        return Status.OK

    def part(self, part: Part) -> list[HealthCheck]:
        return [c for c in self.checks if c.part is part]

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "checked_at": self.checked_at,
            "status": str(self.status),
            "checks": [
                {
                    **asdict(c),
                    "part": str(c.part),
                    "status": str(c.status),
                    "alerting": self.alerting(c),
                }
                for c in self.checks
            ],
            "watched": sorted(self.watched),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        return cls(
            str(data["domain"]),
            float(data["checked_at"]),
            [
                HealthCheck(
                    id=str(c["id"]),
                    part=Part(c["part"]),
                    status=Status(c["status"]),
                    record=str(c["record"]),
                    found=str(c.get("found", "")),
                    problem=str(c.get("problem", "")),
                    expected=str(c.get("expected", "")),
                )
                for c in data["checks"]
            ],
            frozenset(str(w) for w in data.get("watched", [])),
        )


def clean(text: str, limit: int = MAX_FOUND) -> str:
    """`text` without control or line-separator characters (a TXT record may hold CR LF:
    it must not become a line of the alert mail or the terminal), at most `limit` long."""
    out = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _joined(values: Sequence[str]) -> str:
    return " | ".join(values) if values else ""


# -- sending: ownership and DKIM --------------------------------------------------------
def ownership_check(record: str, found: Sequence[str], expected: str, present: bool) -> HealthCheck:
    """The `_secumail.<domain>` token: without it the domain may not send."""
    if present:
        return HealthCheck("secumail_ownership", Part.SENDING, Status.OK, record, expected)
    return HealthCheck(
        "secumail_ownership",
        Part.SENDING,
        Status.FAIL,
        record,
        _joined(found),
        "missing" if not found else "mismatch",
        expected,
    )


@dataclass(frozen=True, slots=True)
class DkimFact:
    """One unretired key: its record name, whether Secumail signs with it (it was seen
    published), whether DNS now holds the matching public key, what DNS holds."""

    record: str
    algorithm: str
    signing: bool
    matches: bool
    found: Sequence[str]
    expected: str


def dkim_checks(keys: Sequence[DkimFact]) -> list[HealthCheck]:
    """RFC 6376 §3.6.1: each key Secumail signs with must be published as it is; a key
    not yet published (a rotation in progress, a new domain) is a warning, not a break."""
    if not keys:
        return [HealthCheck("auth_dkim_exist", Part.SENDING, Status.FAIL, "", "", "no_keys")]
    out = []
    for k in keys:
        if k.matches:
            out.append(
                HealthCheck("auth_dkim_exist", Part.SENDING, Status.OK, k.record, k.algorithm)
            )
            continue
        problem = "missing" if not k.found else "mismatch"
        out.append(
            HealthCheck(
                "auth_dkim_exist",
                Part.SENDING,
                Status.FAIL if k.signing else Status.WARN,
                k.record,
                _joined(k.found),
                problem if k.signing else "not_yet_published",
                k.expected,
            )
        )
    return out


# -- sending: SPF -----------------------------------------------------------------------
def spf_records(txts: Sequence[str]) -> list[str]:
    """RFC 7208 §4.5: the TXT strings that are SPF records ("v=spf1" then space or end)."""
    out = []
    for t in txts:
        head = t.strip()[:7].lower()
        if head == "v=spf1" or head.startswith("v=spf1 "):
            out.append(t.strip())
    return out


def _spf_terms(record: str) -> list[str]:
    return record.split()[1:]


def _qualified(term: str) -> tuple[str, str]:
    if term[:1] in "+-~?" and term[:1]:
        return term[0], term[1:]
    return "+", term


def spf_targets(record: str) -> list[str]:
    """The domains an SPF record sends a checker on to (`include:`, `redirect=`), in order;
    names with macros (§7) are left out: they depend on the message."""
    out = []
    for term in _spf_terms(record):
        _q, body = _qualified(term)
        lower = body.lower()
        for prefix in ("include:", "redirect="):
            if lower.startswith(prefix):
                target = body[len(prefix) :].rstrip(".").lower()
                if target and "%" not in target:
                    out.append(target)
    return out


def _authorises(
    record: str, mechanism: str, others: Mapping[str, Sequence[str]], seen: set[str]
) -> bool:
    """Whether the gateway's mechanism passes in `record`: a `+` (or unqualified) term equal
    to it (a CIDR suffix allowed) before any `all` (§5.1), here or in an include or the
    redirect (§5.2, §6.1), each record visited once."""
    want = mechanism.lower()
    redirect = None
    for term in _spf_terms(record):
        qualifier, body = _qualified(term)
        lower = body.lower()
        if lower == "all":
            return False  # terms after `all` are never reached; `+all` is judged elsewhere
        if lower.startswith("redirect="):
            redirect = lower[len("redirect=") :].rstrip(".")
            continue
        if qualifier != "+":
            continue
        if lower == want or lower.startswith(want + "/"):
            return True
        if lower.startswith("include:"):
            target = lower[len("include:") :].rstrip(".")
            if target in seen:
                continue
            seen.add(target)
            for inner in spf_records(others.get(target, [])):
                if _authorises(inner, mechanism, others, seen):
                    return True
    if redirect and redirect not in seen:
        seen.add(redirect)
        inner_records = spf_records(others.get(redirect, []))
        return len(inner_records) == 1 and _authorises(inner_records[0], mechanism, others, seen)
    return False


def spf_checks(
    domain: str, txts: Sequence[str], mechanism: str, others: Mapping[str, Sequence[str]]
) -> list[HealthCheck]:
    """`auth_spf_exist` (exactly one record), `auth_spf_gateway` (the gateway is allowed:
    the mechanism `domain records` asks for, here or through includes), `auth_spf_policy`
    (not `+all`; `?all` or no `all` is weak). `others` holds the TXT answers of the
    include/redirect targets the prober followed."""
    records = spf_records(txts)
    if not records:
        return [
            HealthCheck(
                "auth_spf_exist",
                Part.SENDING,
                Status.FAIL,
                domain,
                "",
                "missing",
                f"v=spf1 {mechanism} ~all",
            )
        ]
    if len(records) > 1:  # §4.5: a permerror, receivers treat the domain as having none
        return [
            HealthCheck(
                "auth_spf_exist",
                Part.SENDING,
                Status.FAIL,
                domain,
                _joined(records),
                "multiple",
                f"v=spf1 {mechanism} ~all",
            )
        ]
    record = records[0]
    out = [HealthCheck("auth_spf_exist", Part.SENDING, Status.OK, domain, record)]
    if _authorises(record, mechanism, others, {domain.lower()}):
        out.append(HealthCheck("auth_spf_gateway", Part.SENDING, Status.OK, domain, record))
    else:
        out.append(
            HealthCheck(
                "auth_spf_gateway",
                Part.SENDING,
                Status.FAIL,
                domain,
                record,
                "no_gateway",
                mechanism,
            )
        )
    all_term = None
    has_redirect = False
    for term in _spf_terms(record):
        qualifier, body = _qualified(term)
        if body.lower() == "all":
            all_term = qualifier
            break
        has_redirect = has_redirect or body.lower().startswith("redirect=")
    if all_term == "+":
        out.append(
            HealthCheck("auth_spf_policy", Part.SENDING, Status.FAIL, domain, record, "all_pass")
        )
    elif all_term == "?" or (all_term is None and not has_redirect):
        out.append(
            HealthCheck("auth_spf_policy", Part.SENDING, Status.WARN, domain, record, "neutral")
        )
    else:
        out.append(HealthCheck("auth_spf_policy", Part.SENDING, Status.OK, domain, record))
    return out


# -- sending: DMARC ---------------------------------------------------------------------
def dmarc_tags(record: str) -> dict[str, str] | None:
    """RFC 7489 §6.3/§6.4: the tags of a DMARC record, `v=DMARC1` first; None otherwise."""
    parts = [p.strip() for p in record.split(";")]
    tags: dict[str, str] = {}
    for p in parts:
        if not p:
            continue
        name, eq, value = p.partition("=")
        if not eq:
            return None
        tags.setdefault(name.strip().lower(), value.strip())
    first = parts[0].replace(" ", "").lower() if parts else ""
    if first != "v=dmarc1":
        return None
    return tags


def dmarc_checks(
    domain: str,
    found: Sequence[tuple[str, Sequence[str]]],
    *,
    dkim_domain: str | None,
    return_path_domain: str,
) -> list[HealthCheck]:
    """`auth_dmarc_exist`, `auth_dmarc_policy`, `auth_dmarc_alignment`.

    `found` is `(name, TXT answers)` from `_dmarc.<domain>` up through its parents (the
    first with a DMARC record counts, §6.6.3); `dkim_domain` the d= Secumail signs this
    domain's mail with (None: no key signs); `return_path_domain` the domain of the
    envelope sender Secumail uses (SPF's identity)."""
    name = f"_dmarc.{domain}"
    records: list[str] = []
    inherited = False
    for where, txts in found:
        records = [t for t in txts if t.strip().lower().replace(" ", "").startswith("v=dmarc1")]
        if records:
            name = where
            inherited = where != f"_dmarc.{domain}"
            break
    expected = f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}"
    if not records:
        return [
            HealthCheck(
                "auth_dmarc_exist", Part.SENDING, Status.FAIL, name, "", "missing", expected
            )
        ]
    if len(records) > 1:
        return [
            HealthCheck(
                "auth_dmarc_exist",
                Part.SENDING,
                Status.FAIL,
                name,
                _joined(records),
                "multiple",
                expected,
            )
        ]
    record = records[0].strip()
    tags = dmarc_tags(record)
    policy = (tags or {}).get("sp" if inherited and tags and "sp" in tags else "p", "").lower()
    if tags is None or policy not in ("none", "quarantine", "reject"):
        return [
            HealthCheck(
                "auth_dmarc_exist", Part.SENDING, Status.FAIL, name, record, "invalid", expected
            )
        ]
    out = [HealthCheck("auth_dmarc_exist", Part.SENDING, Status.OK, name, record)]
    if policy == "none":
        out.append(
            HealthCheck("auth_dmarc_policy", Part.SENDING, Status.WARN, name, record, "policy_none")
        )
    elif tags.get("pct", "100").strip() not in ("100", ""):
        out.append(HealthCheck("auth_dmarc_policy", Part.SENDING, Status.WARN, name, record, "pct"))
    else:
        out.append(HealthCheck("auth_dmarc_policy", Part.SENDING, Status.OK, name, record))
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    if dkim_domain is None or not aligned(dkim_domain, domain, strict=adkim == "s"):
        out.append(
            HealthCheck(
                "auth_dmarc_alignment",
                Part.SENDING,
                Status.FAIL,
                name,
                f"adkim={adkim}, d={dkim_domain or '-'}",
                "not_aligned",
            )
        )
    elif not aligned(return_path_domain, domain, strict=aspf == "s"):
        # DMARC passes on the DKIM signature alone (§4.2): worth knowing, nothing to fix.
        out.append(
            HealthCheck(
                "auth_dmarc_alignment",
                Part.SENDING,
                Status.INFO,
                name,
                f"adkim={adkim}, d={dkim_domain}; aspf={aspf}, return path @{return_path_domain}",
                "dkim_only",
            )
        )
    else:
        out.append(
            HealthCheck(
                "auth_dmarc_alignment",
                Part.SENDING,
                Status.OK,
                name,
                f"adkim={adkim}, d={dkim_domain}",
            )
        )
    return out


def aligned(identifier: str, author_domain: str, *, strict: bool) -> bool:
    """RFC 7489 §3.1: strict is the same name; relaxed the same organisational domain,
    approximated (no public suffix list) by one being the other or a subdomain of it."""
    a, b = identifier.lower().rstrip("."), author_domain.lower().rstrip(".")
    if a == b:
        return True
    return not strict and (a.endswith("." + b) or b.endswith("." + a))


def dmarc_lookup_names(domain: str) -> list[str]:
    """`_dmarc.<domain>`, then each parent with at least two labels (§6.6.3)."""
    labels = domain.lower().rstrip(".").split(".")
    return [f"_dmarc.{'.'.join(labels[i:])}" for i in range(max(1, len(labels) - 1))]


# -- inbound: the customer's own MX servers -------------------------------------------
@dataclass(frozen=True, slots=True)
class MxFact:
    """One MX address as probed (pipeline.preflight's MxProbe, reduced to what is judged)."""

    host: str
    ip: str | None
    route: str | None  # dane | mta-sts | verified | relaxed; None: refused by the plan
    ok: bool
    reason: str
    tls_version: str | None
    certificate_names: Sequence[str]
    tlsa_records: int
    tlsa_secure: bool
    address_secure: bool


@dataclass(frozen=True, slots=True)
class InboundFacts:
    mx_error: str = ""  # the MX lookup failed (DNS failure, NXDOMAIN)
    null_mx: bool = False
    implicit: bool = False  # no MX: the domain's own address
    mx_secure: bool = False  # the MX answer was DNSSEC-validated
    hosts: Sequence[str] = ()
    probes: Sequence[MxFact] = ()
    sts_mode: str | None = None
    sts_failure: str = ""
    sts_txt: Sequence[str] = ()
    tlsrpt_txt: Sequence[str] = ()


def inbound_checks(domain: str, f: InboundFacts) -> list[HealthCheck]:
    out: list[HealthCheck] = []
    I = Part.INBOUND  # noqa: E741 - short, read once per line below
    if f.mx_error:
        return [HealthCheck("mx_exist", I, Status.FAIL, domain, f.mx_error, "mx_lookup")]
    if f.null_mx:  # RFC 7505: accepts no mail; nothing else to check
        return [HealthCheck("mx_exist", I, Status.INFO, domain, "MX 0 .", "null_mx")]
    out.append(
        HealthCheck("mx_exist", I, Status.WARN, domain, domain, "implicit")
        if f.implicit
        else HealthCheck("mx_exist", I, Status.OK, domain, ", ".join(f.hosts))
    )
    out.append(
        HealthCheck(
            "dnssec_mx_exist",
            I,
            Status.OK if f.mx_secure else Status.WARN,
            domain,
            "signed" if f.mx_secure else "not signed",
            "" if f.mx_secure else "unsigned",
        )
    )
    for p in f.probes:
        where = f"{p.host} ({p.ip})" if p.ip else p.host
        if p.route is None:  # the route plan refused it (e.g. not in the MTA-STS policy)
            out.append(
                HealthCheck("starttls_tls_available", I, Status.FAIL, where, p.reason, "refused")
            )
            continue
        if p.tls_version is None:
            out.append(
                HealthCheck(
                    "starttls_tls_available", I, Status.FAIL, where, p.reason, "no_starttls"
                )
            )
            continue
        out.append(HealthCheck("starttls_tls_available", I, Status.OK, where, p.tls_version))
        good_version = p.tls_version in ("TLSv1.2", "TLSv1.3")
        out.append(
            HealthCheck(
                "starttls_tls_version",
                I,
                Status.OK if good_version else Status.FAIL,
                where,
                p.tls_version,
                "" if good_version else "old_tls",
            )
        )
        if p.ok:
            out.append(
                HealthCheck(
                    "starttls_cert_domain", I, Status.OK, where, ", ".join(p.certificate_names)
                )
            )
        else:
            out.append(
                HealthCheck("starttls_cert_domain", I, Status.FAIL, where, p.reason, "certificate")
            )
        if p.tlsa_records and p.tlsa_secure:
            out.append(
                HealthCheck("starttls_dane_exist", I, Status.OK, where, f"{p.tlsa_records} TLSA")
            )
            valid = p.ok and p.route == "dane"
            out.append(
                HealthCheck(
                    "starttls_dane_valid",
                    I,
                    Status.OK if valid else Status.FAIL,
                    where,
                    "" if valid else p.reason,
                    "" if valid else "dane",
                )
            )
        else:
            out.append(
                HealthCheck(
                    "starttls_dane_exist",
                    I,
                    Status.WARN,
                    where,
                    "TLSA without DNSSEC" if p.tlsa_records else "",
                    "no_dane",
                )
            )
    sts_name = f"_mta-sts.{domain}"
    if f.sts_failure:
        out.append(HealthCheck("mta_sts", I, Status.FAIL, sts_name, f.sts_failure, "sts_broken"))
    elif f.sts_mode == "enforce":
        out.append(HealthCheck("mta_sts", I, Status.OK, sts_name, "mode: enforce"))
    elif f.sts_mode is not None:
        out.append(
            HealthCheck(
                "mta_sts", I, Status.WARN, sts_name, f"mode: {f.sts_mode}", "sts_not_enforced"
            )
        )
    else:
        out.append(
            HealthCheck("mta_sts", I, Status.WARN, sts_name, _joined(f.sts_txt), "sts_missing")
        )
    out.append(tlsrpt_check(domain, f.tlsrpt_txt))
    return out


def tlsrpt_check(domain: str, txts: Sequence[str]) -> HealthCheck:
    """RFC 8460 §3: one `v=TLSRPTv1` record with a `rua=` of mailto: or https: URIs."""
    name = f"_smtp._tls.{domain}"
    records = [
        t.strip() for t in txts if t.strip().lower().replace(" ", "").startswith("v=tlsrptv1")
    ]
    if not records:
        return HealthCheck("tlsrpt_exist", Part.INBOUND, Status.WARN, name, "", "tlsrpt_missing")
    if len(records) > 1:
        return HealthCheck(
            "tlsrpt_exist", Part.INBOUND, Status.FAIL, name, _joined(records), "tlsrpt_invalid"
        )
    tags = {}
    for part in records[0].split(";"):
        key, _eq, value = part.partition("=")
        tags[key.strip().lower()] = value.strip()
    uris = [u.strip().lower() for u in tags.get("rua", "").split(",") if u.strip()]
    if not uris or not all(u.startswith(("mailto:", "https:")) for u in uris):
        return HealthCheck(
            "tlsrpt_exist", Part.INBOUND, Status.FAIL, name, records[0], "tlsrpt_invalid"
        )
    return HealthCheck("tlsrpt_exist", Part.INBOUND, Status.OK, name, records[0])


# -- what to do, in Dutch and English ----------------------------------------------------
TITLES: dict[str, dict[str, str]] = {
    "secumail_ownership": {"en": "Ownership token", "nl": "Eigendomstoken"},
    "auth_dkim_exist": {"en": "DKIM key published", "nl": "DKIM-sleutel gepubliceerd"},
    "auth_spf_exist": {"en": "SPF record", "nl": "SPF-record"},
    "auth_spf_gateway": {"en": "SPF allows Secumail", "nl": "SPF staat Secumail toe"},
    "auth_spf_policy": {"en": "SPF policy", "nl": "SPF-beleid"},
    "auth_dmarc_exist": {"en": "DMARC record", "nl": "DMARC-record"},
    "auth_dmarc_policy": {"en": "DMARC policy", "nl": "DMARC-beleid"},
    "auth_dmarc_alignment": {"en": "DMARC alignment", "nl": "DMARC-alignment"},
    "mx_exist": {"en": "Mail servers (MX)", "nl": "Mailservers (MX)"},
    "dnssec_mx_exist": {"en": "DNSSEC for the MX records", "nl": "DNSSEC voor de MX-records"},
    "starttls_tls_available": {"en": "STARTTLS available", "nl": "STARTTLS beschikbaar"},
    "starttls_tls_version": {"en": "TLS version", "nl": "TLS-versie"},
    "starttls_cert_domain": {"en": "Certificate", "nl": "Certificaat"},
    "starttls_dane_exist": {"en": "DANE (TLSA records)", "nl": "DANE (TLSA-records)"},
    "starttls_dane_valid": {"en": "DANE valid", "nl": "DANE geldig"},
    "mta_sts": {"en": "MTA-STS", "nl": "MTA-STS"},
    "tlsrpt_exist": {"en": "TLS reporting (TLSRPT)", "nl": "TLS-rapportage (TLSRPT)"},
}

ADVICE: dict[str, dict[str, str]] = {
    "dns_failure": {
        "en": (
            "The DNS lookup of {record} failed (no answer). If this stays, check your DNS servers"
            " and DNSSEC."
        ),
        "nl": (
            "Het opvragen van {record} in de DNS mislukte (geen antwoord). Blijft dit zo, "
            "controleer dan uw DNS-servers en DNSSEC."
        ),
    },
    "missing": {
        "en": "The record {record} is gone. Publish it again: {expected}",
        "nl": "Het record {record} is verdwenen. Publiceer het opnieuw: {expected}",
    },
    "mismatch": {
        "en": (
            "The record {record} does not hold what Secumail expects. Publish exactly: {expected}"
        ),
        "nl": "Het record {record} bevat niet wat Secumail verwacht. Publiceer precies: {expected}",
    },
    "no_keys": {
        "en": (
            "Secumail has no DKIM key for this domain. Run `secumail domain rotate-dkim {domain}`."
        ),
        "nl": (
            "Secumail heeft geen DKIM-sleutel voor dit domein. Voer `secumail domain rotate-dkim "
            "{domain}` uit."
        ),
    },
    "not_yet_published": {
        "en": (
            "This new DKIM key is not published yet; publish {record} and run `secumail domain "
            "verify {domain}`."
        ),
        "nl": (
            "Deze nieuwe DKIM-sleutel is nog niet gepubliceerd; publiceer {record} en voer "
            "`secumail domain verify {domain}` uit."
        ),
    },
    "multiple": {
        "en": (
            "There is more than one such record at {record}; receivers then ignore them all. "
            "Merge them into one."
        ),
        "nl": (
            "Er staat meer dan één zo'n record op {record}; ontvangers negeren ze dan allemaal. "
            "Voeg ze samen tot één."
        ),
    },
    "no_gateway": {
        "en": (
            "The SPF record of {domain} does not allow Secumail to send: add `{expected}` before "
            "the `all` term."
        ),
        "nl": (
            "Het SPF-record van {domain} staat Secumail niet toe te verzenden: voeg `{expected}` "
            "toe vóór de `all`-term."
        ),
    },
    "all_pass": {
        "en": "`+all` lets anyone send as {domain}. End the record with `~all` or `-all`.",
        "nl": (
            "`+all` laat iedereen verzenden als {domain}. Sluit het record af met `~all` of `-all`."
        ),
    },
    "neutral": {
        "en": (
            "The record ends without `~all` or `-all`, so receivers treat other senders as "
            "neutral. End it with `~all` or `-all`."
        ),
        "nl": (
            "Het record eindigt niet op `~all` of `-all`, dus ontvangers behandelen andere "
            "afzenders als neutraal. Sluit af met `~all` of `-all`."
        ),
    },
    "invalid": {
        "en": (
            "The DMARC record at {record} cannot be read (it must start with `v=DMARC1;` and have"
            " p=none, quarantine or reject). Publish: {expected}"
        ),
        "nl": (
            "Het DMARC-record op {record} is onleesbaar (het moet beginnen met `v=DMARC1;` en "
            "p=none, quarantine of reject hebben). Publiceer: {expected}"
        ),
    },
    "policy_none": {
        "en": (
            "p=none only observes. When the DMARC reports show all your mail passes, move to "
            "p=quarantine or p=reject."
        ),
        "nl": (
            "p=none kijkt alleen toe. Als de DMARC-rapporten laten zien dat al uw mail slaagt, ga"
            " dan naar p=quarantine of p=reject."
        ),
    },
    "pct": {
        "en": (
            "pct below 100 applies the policy to part of the mail only. Remove pct or set pct=100."
        ),
        "nl": (
            "pct onder 100 past het beleid maar op een deel van de mail toe. Verwijder pct of zet"
            " pct=100."
        ),
    },
    "not_aligned": {
        "en": (
            "Secumail cannot sign this domain's mail with an aligned DKIM key, so DMARC fails. "
            "Publish the DKIM records and run `secumail domain verify {domain}`."
        ),
        "nl": (
            "Secumail kan de mail van dit domein niet met een passende DKIM-sleutel ondertekenen,"
            " dus DMARC faalt. Publiceer de DKIM-records en voer `secumail domain verify "
            "{domain}` uit."
        ),
    },
    "dkim_only": {
        "en": (
            "The return path is Secumail's own domain, so DMARC passes on the DKIM signature "
            "alone. Nothing to do."
        ),
        "nl": (
            "Het retourpad is het eigen domein van Secumail, dus DMARC slaagt op de DKIM-"
            "handtekening alleen. Niets te doen."
        ),
    },
    "mx_lookup": {
        "en": "The MX records of {domain} could not be looked up. Check the domain's DNS.",
        "nl": (
            "De MX-records van {domain} konden niet worden opgevraagd. Controleer de DNS van het "
            "domein."
        ),
    },
    "null_mx": {
        "en": "{domain} says it accepts no mail (null MX). Replies and bounces cannot reach it.",
        "nl": (
            "{domain} zegt geen mail te ontvangen (null MX). Antwoorden en bounces komen er niet "
            "aan."
        ),
    },
    "implicit": {
        "en": (
            "{domain} has no MX record; mail goes to the domain's own address. Publish an MX "
            "record."
        ),
        "nl": (
            "{domain} heeft geen MX-record; mail gaat naar het eigen adres van het domein. "
            "Publiceer een MX-record."
        ),
    },
    "unsigned": {
        "en": "The MX records are not signed with DNSSEC. Ask your DNS provider to sign the zone.",
        "nl": (
            "De MX-records zijn niet ondertekend met DNSSEC. Vraag uw DNS-provider de zone te "
            "ondertekenen."
        ),
    },
    "refused": {
        "en": (
            "Senders that check TLS do not use this mail server (see what was found). Fix its "
            "records or remove it from the MX set."
        ),
        "nl": (
            "Verzenders die TLS controleren gebruiken deze mailserver niet (zie wat gevonden is)."
            " Herstel de records of haal hem uit de MX-set."
        ),
    },
    "no_starttls": {
        "en": (
            "This mail server offers no STARTTLS: mail to you travels unencrypted. Turn on "
            "STARTTLS."
        ),
        "nl": (
            "Deze mailserver biedt geen STARTTLS: mail aan u reist onversleuteld. Zet STARTTLS aan."
        ),
    },
    "old_tls": {
        "en": "This mail server uses a TLS version older than 1.2. Allow TLS 1.2 and 1.3 only.",
        "nl": (
            "Deze mailserver gebruikt een TLS-versie ouder dan 1.2. Sta alleen TLS 1.2 en 1.3 toe."
        ),
    },
    "certificate": {
        "en": (
            "The certificate of this mail server cannot be verified for its name. Install a valid"
            " certificate for the MX name."
        ),
        "nl": (
            "Het certificaat van deze mailserver is niet te verifiëren voor zijn naam. Installeer"
            " een geldig certificaat voor de MX-naam."
        ),
    },
    "no_dane": {
        "en": (
            "No DNSSEC-signed TLSA record for this mail server. Publish one (DANE, RFC 7672) so "
            "senders can authenticate it."
        ),
        "nl": (
            "Geen met DNSSEC ondertekend TLSA-record voor deze mailserver. Publiceer er een "
            "(DANE, RFC 7672) zodat verzenders hem kunnen authenticeren."
        ),
    },
    "dane": {
        "en": (
            "The TLSA records do not match the certificate this mail server presents. Update the "
            "TLSA records (publish the new one before changing the certificate)."
        ),
        "nl": (
            "De TLSA-records passen niet bij het certificaat van deze mailserver. Werk de TLSA-"
            "records bij (publiceer het nieuwe vóór u het certificaat wisselt)."
        ),
    },
    "sts_broken": {
        "en": (
            "The MTA-STS policy cannot be used. Check the TXT record and https://mta-"
            "sts.{domain}/.well-known/mta-sts.txt."
        ),
        "nl": (
            "Het MTA-STS-beleid is onbruikbaar. Controleer het TXT-record en https://mta-"
            "sts.{domain}/.well-known/mta-sts.txt."
        ),
    },
    "sts_not_enforced": {
        "en": (
            "MTA-STS is published but not enforced. Move to mode: enforce once your TLS reports "
            "are clean."
        ),
        "nl": (
            "MTA-STS is gepubliceerd maar niet afgedwongen. Ga naar mode: enforce zodra uw TLS-"
            "rapporten schoon zijn."
        ),
    },
    "sts_missing": {
        "en": "No MTA-STS. Publish it (RFC 8461) so senders without DANE insist on TLS.",
        "nl": "Geen MTA-STS. Publiceer het (RFC 8461) zodat verzenders zonder DANE op TLS staan.",
    },
    "tlsrpt_missing": {
        "en": (
            'No TLS reporting record. Publish _smtp._tls.{domain} TXT "v=TLSRPTv1; '
            'rua=mailto:tls-reports@{domain}" to hear about failed TLS to you.'
        ),
        "nl": (
            'Geen TLS-rapportagerecord. Publiceer _smtp._tls.{domain} TXT "v=TLSRPTv1; '
            'rua=mailto:tls-reports@{domain}" om te horen van mislukte TLS naar u.'
        ),
    },
    "tlsrpt_invalid": {
        "en": (
            "The TLS reporting record cannot be read: one `v=TLSRPTv1` record with rua=mailto: or"
            " https: addresses."
        ),
        "nl": (
            "Het TLS-rapportagerecord is onleesbaar: één `v=TLSRPTv1`-record met rua=mailto:- of "
            "https:-adressen."
        ),
    },
}


def _language(locale: str) -> str:
    return "nl" if locale.lower().startswith("nl") else "en"


def title(check: HealthCheck, locale: str = "en") -> str:
    return TITLES.get(check.id, {}).get(_language(locale), check.id)


def advice(check: HealthCheck, domain: str, locale: str = "en") -> str:
    """What to do about `check` in the given language; "" when nothing is to be done."""
    if not check.problem:
        return ""
    text = ADVICE.get(check.problem, {}).get(_language(locale), "")
    return text.format(record=check.record, expected=check.expected, domain=domain)


def alert_texts(report: HealthReport, *, raised: bool) -> dict[str, AlertText]:
    """The alert mail in Dutch and English: the problems and their fixes, or that all is
    in order again."""
    d = report.domain
    if not raised:
        return {
            "en": AlertText(
                f"The DNS records of {d} are in order again",
                f"The DNS records of {d} that Secumail relies on are in order again.\n"
                f"`secumail domain show {d}` prints the full report.",
            ),
            "nl": AlertText(
                f"De DNS-records van {d} zijn weer in orde",
                f"De DNS-records van {d} waar Secumail op rekent zijn weer in orde.\n"
                f"`secumail domain show {d}` toont het volledige rapport.",
            ),
        }
    problems = report.problems
    n = len(problems)
    out = {}
    for lang, subject, intro, outro in (
        (
            "en",
            f"{n} problem{'s' if n != 1 else ''} with the DNS records of {d}",
            f"Secumail's daily check of {d} found {n} problem{'s' if n != 1 else ''}: "
            "mail from this domain may be refused, unsigned or marked as spam until "
            "it is fixed.",
            "You get one more mail when everything is fixed.",
        ),
        (
            "nl",
            f"{n} {'problemen' if n != 1 else 'probleem'} met de DNS-records van {d}",
            f"De dagelijkse controle van {d} door Secumail vond {n} "
            f"{'problemen' if n != 1 else 'probleem'}: mail van dit domein kan tot het hersteld is "
            "geweigerd, niet ondertekend of als spam gezien worden.",
            "U krijgt nog één mail als alles hersteld is.",
        ),
    ):
        lines = [intro, ""]
        for c in problems:
            lines.append(f"- {title(c, lang)} ({c.record}): {advice(c, d, lang)}")
        lines += ["", outro, f"secumail domain show {d}"]
        out[lang] = AlertText(subject, "\n".join(lines))
    return out
