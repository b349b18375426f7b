"""What SPF, DKIM and DMARC said about a message, and what follows from it (pure).

The checks themselves run in `pipeline.sender_auth` (maintained libraries: pyspf for
RFC 7208, dkimpy for RFC 6376, authheaders for RFC 7489); this module holds their results
as plain values and the decisions made from them:
- `dmarc_from_domain`: the RFC 5322.From domain DMARC evaluates, read with our own strict
  parser (RFC 7489 §6.6.1: a message with several From fields or several addresses in one
  is not evaluated; here it is a permerror). The libraries use the standard library's
  lenient `getaddresses` (CVE-2023-27043) and the first of several From fields, so they
  never decide which domain that is.
- `reply_allowed`: whether the envelope sender may get an automatic reply: only when its
  domain passed SPF, or a DKIM signature passed whose d= has the same organizational
  domain (relaxed alignment, RFC 7489 §3.1.1) — otherwise the sender may be forged and a
  reply would go to a stranger (backscatter, amplification).
- `dmarc_evaluate`: the DMARC result from the policy record found and the SPF and DKIM
  results (RFC 7489 §3.1 identifier alignment, §6.6.2). Alignment is decided here, with
  an organizational domain function that follows the Public Suffix List's default rule
  (an unknown TLD is a public suffix): authheaders' own `get_org_domain` maps every name
  under a TLD missing from its bundled list to the bare TLD, so `victim.test` and
  `mailer.test` would "align".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from secumail.mail.address import AddressError, normalise_domain
from secumail.mail.headers import HeaderError, parse_header_section, single_from_address

MAX_LABEL = 63


class AuthResult(StrEnum):
    """Results as RFC 8601 §2.7 names them (SPF's, DKIM's and DMARC's share these)."""

    PASS = "pass"  # noqa: S105 - a result, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"  # SPF only
    NEUTRAL = "neutral"  # SPF only
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfCheck:
    """RFC 7208 §2.6: the result for the MAIL FROM identity (the HELO identity for <>)."""

    result: AuthResult
    domain: str  # the identity's domain checked


@dataclass(frozen=True, slots=True)
class DkimCheck:
    """One DKIM-Signature field (RFC 6376 §6) and its result."""

    result: AuthResult
    domain: str  # d=, normalised; "" when the signature did not name a usable one
    selector: str  # s=, printable ASCII, bounded


@dataclass(frozen=True, slots=True)
class DmarcCheck:
    """RFC 7489 §6.6: the result for the From domain and the policy found (p= or sp=)."""

    result: AuthResult
    from_domain: str  # "" when the From field could not be read (permerror)
    policy: str  # "none", "quarantine", "reject", or "" without a record


@dataclass(frozen=True, slots=True)
class SenderAuth:
    spf: SpfCheck
    dkim: tuple[DkimCheck, ...]
    dmarc: DmarcCheck

    def aligned_dkim(self, domain: str, org_domain: Callable[[str], str]) -> DkimCheck | None:
        """A passing signature whose d= is aligned (relaxed) with `domain`, if any."""
        if not domain:
            return None
        wanted = org_domain(domain)
        for check in self.dkim:
            passed = check.result is AuthResult.PASS and check.domain
            if passed and org_domain(check.domain) == wanted:
                return check
        return None


def dmarc_from_domain(message: bytes) -> str | None:
    """The one RFC 5322.From domain of `message`; None when DMARC cannot evaluate it
    (no From, several From fields, a list, an address that does not parse)."""
    try:
        return single_from_address(parse_header_section(message)).domain
    except (HeaderError, AddressError):
        return None


POLICIES = ("none", "quarantine", "reject")


def aligned(identifier: str, from_domain: str, mode: str, org_domain: Callable[[str], str]) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict ("s") is the same name, relaxed the same
    organizational domain."""
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return org_domain(identifier) == org_domain(from_domain)


def dmarc_evaluate(
    from_domain: str,
    record: dict[str, str] | None,
    *,
    from_org_domain: bool,
    spf: SpfCheck,
    dkim: tuple[DkimCheck, ...],
    org_domain: Callable[[str], str],
) -> DmarcCheck:
    """The DMARC result for `from_domain` (RFC 7489 §6.6.2): `record` is the policy record
    found (None: none), `from_org_domain` whether it was found at the organizational
    domain rather than at the From domain itself (then sp= applies, §6.3)."""
    if not record:
        return DmarcCheck(AuthResult.NONE, from_domain, "")
    policy = record.get("p", "")
    if from_org_domain:
        policy = record.get("sp", policy)
    if policy not in POLICIES:
        return DmarcCheck(AuthResult.PERMERROR, from_domain, "")
    adkim, aspf = record.get("adkim", "r"), record.get("aspf", "r")
    spf_ok = spf.result is AuthResult.PASS and aligned(spf.domain, from_domain, aspf, org_domain)
    dkim_ok = any(
        c.result is AuthResult.PASS and aligned(c.domain, from_domain, adkim, org_domain)
        for c in dkim
    )
    return DmarcCheck(AuthResult.PASS if spf_ok or dkim_ok else AuthResult.FAIL, from_domain, policy)


def clean_domain(text: str) -> str:
    """A domain from hostile input (d=, a MAIL FROM domain) normalised, or ""."""
    try:
        return normalise_domain(text)
    except AddressError:
        return ""


def clean_token(text: str, limit: int = MAX_LABEL) -> str:
    """Printable ASCII only, bounded: safe to write into a report."""
    return "".join(c for c in text if " " < c < "\x7f")[:limit]


def reply_allowed(
    mail_from_domain: str, auth: SenderAuth, org_domain: Callable[[str], str]
) -> bool:
    """Whether the MAIL FROM domain is authenticated: SPF passed for it, or a DKIM
    signature aligned with it (same organizational domain) passed."""
    if not mail_from_domain:
        return False
    if auth.spf.result is AuthResult.PASS and auth.spf.domain == mail_from_domain:
        return True
    return auth.aligned_dkim(mail_from_domain, org_domain) is not None
