"""The test address's report (mail/test_report.py) and the decisions it rests on
(mail/sender_auth.py): both languages, verdicts and fixes, nothing of the message, no
header injection; who may get a reply; DMARC alignment; rate-limit networks."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from secumail.mail import test_report as tr
from secumail.mail.address import Address
from secumail.mail.ip_scope import client_network
from secumail.mail.sender_auth import (
    AuthResult,
    DkimCheck,
    DmarcCheck,
    SenderAuth,
    SpfCheck,
    aligned,
    dmarc_evaluate,
    dmarc_from_domain,
    reply_allowed,
)
from secumail.pipeline.sender_auth import org_domain

P, F, N = AuthResult.PASS, AuthResult.FAIL, AuthResult.NONE
GOOD = SenderAuth(
    SpfCheck(P, "mailer.example"),
    (DkimCheck(P, "mailer.example", "s1"),),
    DmarcCheck(P, "mailer.example", "reject"),
)


def request(auth: SenderAuth = GOOD, *, tls: str | None = "TLSv1.3", helo: str = "mx.mailer.example",
            in_reply_to: str | None = "<abc.1@mailer.example>") -> tr.TestReportRequest:
    return tr.TestReportRequest(
        hostname="gw.example",
        from_address="test@gw.example",
        to=Address("alice", "mailer.example"),
        mail_from_domain="mailer.example",
        facts=tr.ConnectionFacts("192.0.2.7", helo, tls, "TLS_AES_256_GCM_SHA384" if tls else None),
        auth=auth,
        message_id="<R1@gw.example>",
        in_reply_to=in_reply_to,
        date=1_800_000_000.0,
    )


def parsed(raw: bytes):
    msg = message_from_bytes(raw, policy=policy.default)
    return msg, msg.get_content()


def test_a_good_sender_gets_good_in_both_languages_with_every_fact() -> None:
    raw = tr.build_test_report(request(), org_domain)
    msg, body = parsed(raw)
    assert msg["From"].addresses[0].addr_spec == "test@gw.example"
    assert msg["To"].addresses[0].addr_spec == "alice@mailer.example"
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5
    assert msg["In-Reply-To"] == msg["References"] == "<abc.1@mailer.example>"
    assert msg["Subject"] == "Secumail testrapport / test report: goed / good"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    for text in ("Oordeel: GOED", "Verdict: GOOD", "TLS-versie:           TLSv1.3",
                 "TLS version:        TLSv1.3", "TLS_AES_256_GCM_SHA384", "192.0.2.7",
                 "mx.mailer.example", "pass (mailer.example)", "pass (d=mailer.example, s=s1)",
                 "pass (mailer.example, p=reject)", "Clientcertificaat:    niet gevraagd",
                 "Client certificate: not asked for"):
        assert text in body, text
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))  # RFC 5322 §2.1.1
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only


@pytest.mark.parametrize(
    ("auth", "tls", "keys"),
    [
        (GOOD, "TLSv1.1", ["tls_version"]),
        (SenderAuth(SpfCheck(N, "m.example"), GOOD.dkim, GOOD.dmarc), "TLSv1.3", ["spf_none"]),
        (SenderAuth(SpfCheck(AuthResult.SOFTFAIL, "m.example"), GOOD.dkim, GOOD.dmarc), "TLSv1.3", ["spf_fail"]),
        (SenderAuth(SpfCheck(AuthResult.PERMERROR, "m.example"), GOOD.dkim, GOOD.dmarc), "TLSv1.3", ["spf_error"]),
        (SenderAuth(GOOD.spf, (), GOOD.dmarc), "TLSv1.3", ["dkim_none"]),
        (SenderAuth(GOOD.spf, (DkimCheck(F, "mailer.example", "s1"),), GOOD.dmarc), "TLSv1.3", ["dkim_fail"]),
        (SenderAuth(GOOD.spf, (DkimCheck(P, "esp.example", "s1"),), GOOD.dmarc), "TLSv1.3", ["dkim_unaligned"]),
        (SenderAuth(GOOD.spf, GOOD.dkim, DmarcCheck(N, "mailer.example", "")), "TLSv1.3", ["dmarc_none"]),
        (SenderAuth(GOOD.spf, GOOD.dkim, DmarcCheck(P, "mailer.example", "none")), "TLSv1.3", ["dmarc_weak"]),
        (SenderAuth(GOOD.spf, GOOD.dkim, DmarcCheck(F, "mailer.example", "reject")), "TLSv1.3", ["dmarc_fail"]),
        (SenderAuth(GOOD.spf, GOOD.dkim, DmarcCheck(AuthResult.PERMERROR, "", "")), "TLSv1.3", ["from_unreadable"]),
    ],
)
def test_each_weakness_is_a_fix_in_both_languages(auth: SenderAuth, tls: str, keys: list[str]) -> None:
    req = request(auth, tls=tls)
    found = tr.findings(req, org_domain)
    assert [f.key for f in found] == keys
    msg, body = parsed(tr.build_test_report(req, org_domain))
    assert msg["Subject"].endswith("te verbeteren / to improve")
    assert "Oordeel: TE VERBETEREN" in body and "Verdict: TO IMPROVE" in body
    for f in found:
        assert f.en in body and f.nl in body


def test_an_spf_fix_names_the_record_to_publish_for_this_server() -> None:
    auth = SenderAuth(SpfCheck(N, "mailer.example"), GOOD.dkim, GOOD.dmarc)
    [fix] = tr.findings(request(auth), org_domain)
    assert '"v=spf1 ip4:192.0.2.7 -all"' in fix.en and "mailer.example" in fix.nl


def test_hostile_values_cannot_add_header_fields_or_lines() -> None:
    """A HELO name, a d= or selector with CR LF or control characters is cut to printable
    ASCII in the body; an In-Reply-To that is not a plain msg-id is left out."""
    auth = SenderAuth(
        GOOD.spf, (DkimCheck(P, "mailer.example", "s1\r\nBcc: x@evil.example"),), GOOD.dmarc
    )
    raw = tr.build_test_report(
        request(auth, helo="mx\r\nBcc: victim@example.org\x00", in_reply_to="<a@b>\r\nBcc: x@evil.example"),
        org_domain,
    )
    msg, body = parsed(raw)
    assert msg["Bcc"] is None and msg["In-Reply-To"] is None and msg["References"] is None
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert b"evil" not in header and b"victim" not in header
    assert "\r\nBcc" not in body and "\x00" not in body


@pytest.mark.parametrize(
    "value",
    ["<a@b>\r\nX: y", "<a b@c>", "a@b", "<a@b> <c@d>", "<\u00e9@b>", "<" + "a" * 200 + "@b>", "", None],
)
def test_only_a_plain_message_id_is_echoed(value: str | None) -> None:
    assert tr.sane_message_id(value) is None


def test_a_sane_message_id_is_echoed() -> None:
    assert tr.sane_message_id(" <20261207.abc+x@mail.example> ") == "<20261207.abc+x@mail.example>"


def test_the_plaintext_refusal_explains_in_both_languages_in_ascii() -> None:
    reply = tr.PLAINTEXT_REFUSED
    assert (reply.code, reply.enhanced) == (554, "5.7.10")
    wire = reply.render()
    assert wire.isascii()
    lines = wire.decode().split("\r\n")[:-1]
    assert len(lines) == 6 and all(line.startswith(("554-5.7.10 ", "554 5.7.10 ")) for line in lines)
    assert lines[-1].startswith("554 5.7.10 ")
    assert "without TLS" in reply.text and "zonder TLS" in reply.text and "STARTTLS" in reply.text


# -- who may get a reply ------------------------------------------------------------


def test_spf_pass_for_the_mail_from_domain_allows_a_reply() -> None:
    auth = SenderAuth(SpfCheck(P, "mailer.example"), (), DmarcCheck(N, "", ""))
    assert reply_allowed("mailer.example", auth, org_domain)
    assert not reply_allowed("other.example", auth, org_domain)  # SPF passed for another name


def test_an_aligned_dkim_pass_allows_a_reply_an_unaligned_one_does_not() -> None:
    spf_fail = SpfCheck(F, "mailer.example")
    sub = SenderAuth(spf_fail, (DkimCheck(P, "mail.mailer.example", "s"),), DmarcCheck(N, "", ""))
    assert reply_allowed("mailer.example", sub, org_domain)  # same organizational domain
    other = SenderAuth(spf_fail, (DkimCheck(P, "esp.example", "s"),), DmarcCheck(N, "", ""))
    assert not reply_allowed("mailer.example", other, org_domain)
    failed = SenderAuth(spf_fail, (DkimCheck(F, "mailer.example", "s"),), DmarcCheck(N, "", ""))
    assert not reply_allowed("mailer.example", failed, org_domain)
    assert not reply_allowed("", GOOD, org_domain)


def test_names_under_an_unknown_tld_are_not_one_organization() -> None:
    """authheaders' own org-domain lookup answers "test" for both names; ours follows the
    Public Suffix List's default rule."""
    assert org_domain("victim.test") == "victim.test" and org_domain("a.victim.test") == "victim.test"
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    spoof = SenderAuth(SpfCheck(F, "victim.test"), (DkimCheck(P, "mailer.test", "s1"),), DmarcCheck(N, "", ""))
    assert not reply_allowed("victim.test", spoof, org_domain)


def test_dmarc_alignment_strict_and_relaxed() -> None:
    assert aligned("mail.example.com", "example.com", "r", org_domain)
    assert not aligned("mail.example.com", "example.com", "s", org_domain)
    assert not aligned("example.net", "example.com", "r", org_domain)
    spf = SpfCheck(P, "bounces.example.com")
    relaxed = dmarc_evaluate("example.com", {"p": "reject"}, from_org_domain=False, spf=spf, dkim=(),
                             org_domain=org_domain)
    assert relaxed == DmarcCheck(P, "example.com", "reject")
    strict = dmarc_evaluate("example.com", {"p": "reject", "aspf": "s"}, from_org_domain=False, spf=spf,
                            dkim=(), org_domain=org_domain)
    assert strict.result is F
    sub = dmarc_evaluate("a.example.com", {"p": "reject", "sp": "quarantine"}, from_org_domain=True,
                         spf=spf, dkim=(), org_domain=org_domain)
    assert sub == DmarcCheck(P, "a.example.com", "quarantine")
    assert dmarc_evaluate("example.com", None, from_org_domain=False, spf=spf, dkim=(),
                          org_domain=org_domain).result is N
    assert dmarc_evaluate("example.com", {"p": "bogus"}, from_org_domain=False, spf=spf, dkim=(),
                          org_domain=org_domain).result is AuthResult.PERMERROR


@pytest.mark.parametrize(
    "head",
    [
        b"From: a@x.example\r\nFrom: b@y.example\r\n",  # several From fields (DKIM signs the last)
        b"From: a@x.example, b@y.example\r\n",  # a list
        b'From: "a@x.example" <b@y.example>, c@z.example\r\n',
        b"From: <a@x.example\r\n",
        b"Subject: no From\r\n",
    ],
)
def test_dmarc_evaluates_no_from_domain_when_from_is_not_one_address(head: bytes) -> None:
    assert dmarc_from_domain(head + b"\r\nbody\r\n") is None


def test_dmarc_from_domain_is_the_address_not_the_display_name() -> None:
    assert dmarc_from_domain(b'From: "boss@bank.example" <x@Mailer.Example>\r\n\r\n') == "mailer.example"


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ],
)
def test_rate_limits_count_by_network(ip: str, network: str) -> None:
    assert client_network(ip) == network
