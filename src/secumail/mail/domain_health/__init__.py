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

from secumail.mail.domain_health.inbound import (
    InboundFacts,
    MxFact,
    inbound_checks,
    tlsrpt_check,
)
from secumail.mail.domain_health.model import (
    MAX_FOUND,
    REQUIRED,
    SPF_LOOKUP_LIMIT,
    HealthCheck,
    HealthReport,
    Part,
    Status,
    clean,
)
from secumail.mail.domain_health.sending import (
    DkimFact,
    aligned,
    dkim_checks,
    dmarc_checks,
    dmarc_lookup_names,
    dmarc_tags,
    ownership_check,
    spf_checks,
    spf_records,
    spf_targets,
)
from secumail.mail.domain_health.texts import (
    ADVICE,
    TITLES,
    advice,
    alert_texts,
    title,
)

__all__ = [
    "ADVICE",
    "MAX_FOUND",
    "REQUIRED",
    "SPF_LOOKUP_LIMIT",
    "TITLES",
    "DkimFact",
    "HealthCheck",
    "HealthReport",
    "InboundFacts",
    "MxFact",
    "Part",
    "Status",
    "advice",
    "alert_texts",
    "aligned",
    "clean",
    "dkim_checks",
    "dmarc_checks",
    "dmarc_lookup_names",
    "dmarc_tags",
    "inbound_checks",
    "ownership_check",
    "spf_checks",
    "spf_records",
    "spf_targets",
    "title",
    "tlsrpt_check",
]
