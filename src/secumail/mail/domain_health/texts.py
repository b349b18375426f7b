"""What to do about each check, in Dutch and English, and the alert mail's text."""

from __future__ import annotations

from secumail.mail.alert_mail import AlertText
from secumail.mail.domain_health.model import HealthCheck, HealthReport

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
