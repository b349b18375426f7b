"""The test address's answers (pure): the report mailed back, and the plaintext refusal.

Anyone may write to `<inbound.test_address>@<server.hostname>` (`pipeline.test_address`).
Over TLS, the envelope sender gets one short report, in Dutch and English in one message
(we do not know their language): how their server connected (TLS version, cipher, client
certificate), what SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) said, a verdict
and what to fix. Without TLS the message is refused at the end of DATA with
`PLAINTEXT_REFUSED`, so their own server bounces that explanation to them.

The report never quotes the message (no Subject, no body): only the connection facts and
the results. Every value from their side that it shows (HELO name, domains, selectors)
is cut to printable ASCII here; header values written from their input (To, In-Reply-To,
References) are their address and message-id, checked before use (no CR/LF injection).
It is an automatic reply (RFC 3834 §5: `Auto-Submitted: auto-replied`) sent from the null
envelope sender, so it is never answered or bounced back to us.
"""

from __future__ import annotations

import quopri
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from secumail.mail.address import Address
from secumail.mail.reply import Reply
from secumail.mail.sender_auth import AuthResult, SenderAuth, clean_token

# RFC 5321 §4.2.3 (554: transaction failed) with the RFC 5248 registry's X.7.10
# "Encryption Needed" (RFC 3463 as extended; RFC 8689 uses it for TLS that was required).
# ASCII only: their server quotes the text in the bounce it sends them.
PLAINTEXT_REFUSED = Reply(
    554,
    "5.7.10",
    "Your server sent this message without TLS (no STARTTLS).\n"
    "It is refused: this test only reports on mail sent over TLS.\n"
    "Offer and use STARTTLS (TLS 1.2 or newer) for outgoing mail, then send again.\n"
    "Uw server verstuurde dit bericht zonder TLS (geen STARTTLS).\n"
    "Het is geweigerd: deze test rapporteert alleen over mail die via TLS komt.\n"
    "Gebruik STARTTLS (TLS 1.2 of nieuwer) voor uitgaande mail en verstuur opnieuw.",
)

# RFC 5322 §3.6.4 msg-id, the common dot-atom form only; anything else is not echoed.
_MSG_ID = re.compile(
    r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,128}@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,128}>"
)
_GOOD_TLS = ("TLSv1.2", "TLSv1.3")
OrgDomain = Callable[[str], str]  # a domain's organizational domain (RFC 7489 §3.2)
_STRICT_POLICIES = ("quarantine", "reject")


def sane_message_id(value: str | None) -> str | None:
    """`value` when it is a plain msg-id (`<left@right>`, printable ASCII); else None."""
    if value is None:
        return None
    text = value.strip()
    return text if _MSG_ID.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    client_ip: str
    helo: str
    tls_version: str | None
    tls_cipher: str | None
    client_certificate: str | None = None  # the inbound MX does not ask for one


@dataclass(frozen=True, slots=True)
class Finding:
    """Something to fix, in both languages."""

    key: str
    en: str
    nl: str


@dataclass(frozen=True, slots=True)
class TestReportRequest:
    __test__ = False  # not a pytest test class, whatever its name

    hostname: str  # server.hostname
    from_address: str  # <inbound.test_address>@<hostname>
    to: Address  # the envelope sender, authenticated (mail.sender_auth.reply_allowed)
    mail_from_domain: str
    facts: ConnectionFacts
    auth: SenderAuth
    message_id: str  # this report's own Message-ID, <...>
    in_reply_to: str | None = None  # the original's Message-ID when sane
    date: float | None = None


def findings(req: TestReportRequest, org_domain: OrgDomain) -> list[Finding]:
    """What to fix, most important first; empty: all good."""
    out: list[Finding] = []
    facts, auth = req.facts, req.auth
    if facts.tls_version not in _GOOD_TLS:
        out.append(
            Finding(
                "tls_version",
                "Offer TLS 1.2 or 1.3 for outgoing mail; older versions are broken.",
                "Bied TLS 1.2 of 1.3 aan voor uitgaande mail; oudere versies zijn onveilig.",
            )
        )
    spf = auth.spf
    ip = clean_token(facts.client_ip, 64)
    domain = clean_token(spf.domain, 253)
    if spf.result in (AuthResult.NONE,):
        out.append(
            Finding(
                "spf_none",
                f"Publish an SPF record for {domain} that includes this server,"
                f' e.g. "v=spf1 ip4:{ip} -all" (with your other servers).',
                f"Publiceer een SPF-record voor {domain} waarin deze server staat,"
                f' bijvoorbeeld "v=spf1 ip4:{ip} -all" (met uw andere servers).',
            )
        )
    elif spf.result in (AuthResult.FAIL, AuthResult.SOFTFAIL, AuthResult.NEUTRAL):
        out.append(
            Finding(
                "spf_fail",
                f"Add this server ({ip}) to the SPF record of {domain}.",
                f"Voeg deze server ({ip}) toe aan het SPF-record van {domain}.",
            )
        )
    elif spf.result in (AuthResult.PERMERROR, AuthResult.TEMPERROR):
        out.append(
            Finding(
                "spf_error",
                f"The SPF record of {domain} could not be evaluated ({spf.result.value}):"
                " check its syntax and at most 10 DNS lookups (RFC 7208 section 4.6.4).",
                f"Het SPF-record van {domain} kon niet worden beoordeeld ({spf.result.value}):"
                " controleer de syntaxis en hooguit 10 DNS-lookups (RFC 7208 par. 4.6.4).",
            )
        )
    dmarc = auth.dmarc
    from_domain = clean_token(dmarc.from_domain, 253)
    if not auth.dkim:
        out.append(
            Finding(
                "dkim_none",
                f"Sign your mail with DKIM, with d= your From domain ({from_domain or domain}).",
                f"Onderteken uw mail met DKIM, met d= uw From-domein ({from_domain or domain}).",
            )
        )
    elif not any(c.result is AuthResult.PASS for c in auth.dkim):
        out.append(
            Finding(
                "dkim_fail",
                "No DKIM signature verified: check the public key published at"
                " <selector>._domainkey.<domain> and that nothing changes the message after"
                " signing.",
                "Geen DKIM-handtekening klopte: controleer de publieke sleutel op"
                " <selector>._domainkey.<domein> en dat niets het bericht na het ondertekenen"
                " wijzigt.",
            )
        )
    elif from_domain and auth.aligned_dkim(from_domain, org_domain) is None:
        out.append(
            Finding(
                "dkim_unaligned",
                f"Sign with DKIM aligned with your From domain: d={from_domain}.",
                f"Onderteken met DKIM in lijn met uw From-domein: d={from_domain}.",
            )
        )
    if dmarc.result is AuthResult.PERMERROR and not dmarc.from_domain:
        out.append(
            Finding(
                "from_unreadable",
                "Give the message exactly one From field with one address (RFC 5322).",
                "Geef het bericht precies een From-veld met een adres (RFC 5322).",
            )
        )
    elif not dmarc.policy:
        out.append(
            Finding(
                "dmarc_none",
                f"Publish a DMARC record at _dmarc.{from_domain},"
                ' e.g. "v=DMARC1; p=quarantine", and move to p=reject.',
                f"Publiceer een DMARC-record op _dmarc.{from_domain},"
                ' bijvoorbeeld "v=DMARC1; p=quarantine", en ga daarna naar p=reject.',
            )
        )
    else:
        if dmarc.result is not AuthResult.PASS:
            out.append(
                Finding(
                    "dmarc_fail",
                    f"DMARC failed for {from_domain}: SPF or DKIM must pass for a domain"
                    " aligned with it.",
                    f"DMARC faalde voor {from_domain}: SPF of DKIM moet slagen voor een"
                    " domein dat erbij hoort.",
                )
            )
        if dmarc.policy not in _STRICT_POLICIES:
            out.append(
                Finding(
                    "dmarc_weak",
                    f"Your DMARC policy is p={clean_token(dmarc.policy, 16)}: move to"
                    " p=quarantine or p=reject.",
                    f"Uw DMARC-beleid is p={clean_token(dmarc.policy, 16)}: ga naar"
                    " p=quarantine of p=reject.",
                )
            )
    return out


def _spf_line(req: TestReportRequest) -> str:
    return f"{req.auth.spf.result.value} ({clean_token(req.auth.spf.domain, 253)})"


def _dkim_lines(req: TestReportRequest) -> list[str]:
    if not req.auth.dkim:
        return ["none / geen"]
    return [
        f"{c.result.value} (d={clean_token(c.domain, 253) or '?'}, s={clean_token(c.selector)})"
        for c in req.auth.dkim
    ]


def _dmarc_line(req: TestReportRequest) -> str:
    d = req.auth.dmarc
    policy = f", p={clean_token(d.policy, 16)}" if d.policy else ""
    return f"{d.result.value} ({clean_token(d.from_domain, 253) or '?'}{policy})"


def report_text(req: TestReportRequest, org_domain: OrgDomain) -> tuple[str, bool]:
    """The report's text and whether the verdict is good."""
    todo = findings(req, org_domain)
    good = not todo
    f = req.facts
    tls = clean_token(f.tls_version or "none", 16)
    cipher = clean_token(f.tls_cipher or "-", 64)
    helo = clean_token(f.helo, 255) or "-"
    ip = clean_token(f.client_ip, 64)
    cert_en = (
        clean_token(f.client_certificate, 255)
        if f.client_certificate
        else "not asked for (this server does not request client certificates)"
    )
    cert_nl = (
        clean_token(f.client_certificate, 255)
        if f.client_certificate
        else "niet gevraagd (deze server vraagt geen clientcertificaten)"
    )
    dkim = _dkim_lines(req)
    facts_en = [
        f"  Client address:     {ip}",
        f"  HELO/EHLO name:     {helo}",
        f"  TLS version:        {tls}",
        f"  TLS cipher:         {cipher}",
        f"  Client certificate: {cert_en}",
        f"  SPF:                {_spf_line(req)}",
        *(f"  DKIM:               {line}" for line in dkim),
        f"  DMARC:              {_dmarc_line(req)}",
    ]
    facts_nl = [
        f"  Adres van de client:  {ip}",
        f"  HELO/EHLO-naam:       {helo}",
        f"  TLS-versie:           {tls}",
        f"  TLS-cipher:           {cipher}",
        f"  Clientcertificaat:    {cert_nl}",
        f"  SPF:                  {_spf_line(req)}",
        *(f"  DKIM:                 {line}" for line in dkim),
        f"  DMARC:                {_dmarc_line(req)}",
    ]
    host = clean_token(req.hostname, 253)
    nl = [
        "(English below)",
        "",
        f"Dit is het antwoord van het testadres van {host} op uw bericht.",
        "Zo verbond uw server en zo werd het bericht geauthenticeerd:",
        "",
        *facts_nl,
        "",
        "Oordeel: GOED - niets te verbeteren." if good else "Oordeel: TE VERBETEREN.",
        *(f"  - {x.nl}" for x in todo),
        "",
        "Van uw bericht is niets bewaard en niets wordt hier geciteerd. Dit antwoord wordt",
        "alleen via een beveiligde verbinding bezorgd (DANE, MTA-STS of een geverifieerd",
        "certificaat).",
    ]
    en = [
        f"This is the answer of the test address of {host} to your message.",
        "This is how your server connected and how the message was authenticated:",
        "",
        *facts_en,
        "",
        "Verdict: GOOD - nothing to improve." if good else "Verdict: TO IMPROVE.",
        *(f"  - {x.en}" for x in todo),
        "",
        "Nothing of your message was kept, and nothing of it is quoted here. This answer is",
        "delivered only over a secure connection (DANE, MTA-STS or a verified certificate).",
    ]
    return "\r\n".join([*nl, "", "-" * 60, "", *en, ""]), good


def build_test_report(req: TestReportRequest, org_domain: OrgDomain) -> bytes:
    """The report as a message (CRLF), text/plain UTF-8, quoted-printable."""
    text, good = report_text(req, org_domain)
    verdict = "goed / good" if good else "te verbeteren / to improve"
    headers = [
        f"From: Secumail test <{req.from_address}>",
        f"To: <{req.to}>",
        f"Subject: Secumail testrapport / test report: {verdict}",
        f"Date: {formatdate(req.date if req.date is not None else time.time())}",
        f"Message-ID: {req.message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
    ]
    reply_to_id = sane_message_id(req.in_reply_to)
    if reply_to_id:
        headers[5:5] = [f"In-Reply-To: {reply_to_id}", f"References: {reply_to_id}"]
    for line in headers:
        if any(c in line for c in "\r\n\0"):  # never: every value was checked above
            raise ValueError("a header value holds a line break")
    body = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8"))
    body = body.replace(b"\n", b"\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("utf-8") + body
