"""Judging the sending records: ownership token, DKIM keys, SPF (RFC 7208 §4.5, §4.6.4,
§5.1, §6.1) and DMARC (RFC 7489 §3.1, §6.3, §6.4, §6.6.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from secumail.mail.domain_health.model import HealthCheck, Part, Status, _joined


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
