"""Judging the customer's own inbound mail: MX, STARTTLS, TLS version, certificate,
DNSSEC, DANE (RFC 7672 §2.2, §3.1), MTA-STS (RFC 8461 §3.1, §5), TLSRPT (RFC 8460 §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from secumail.mail.domain_health.model import HealthCheck, Part, Status, _joined


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
