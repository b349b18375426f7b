"""The pure health model of a customer domain (mail/domain_health.py): each check judged
from the facts, the fix texts in Dutch and English, and which failures are a broken record
(the alert) rather than a recommended record never published."""

from __future__ import annotations

import pytest

from secumail.mail import domain_health as dh
from secumail.mail.domain_health import HealthCheck, Part, Status

MECH = "a:gw.example.nl"


def by_id(checks: list[HealthCheck]) -> dict[str, HealthCheck]:
    return {c.id: c for c in checks}


# -- SPF (RFC 7208) ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("txts", "others", "exist", "gateway", "policy"),
    [
        (["v=spf1 a:gw.example.nl ~all"], {}, "ok", "ok", "ok"),
        (["V=SPF1 +A:GW.EXAMPLE.NL -all"], {}, "ok", "ok", "ok"),  # case-insensitive
        (["v=spf1 a:gw.example.nl/24 -all"], {}, "ok", "ok", "ok"),  # a CIDR suffix still covers it
        (["v=spf1 mx -all"], {}, "ok", "fail", "ok"),
        (["v=spf1 -a:gw.example.nl ~all"], {}, "ok", "fail", "ok"),  # a fail qualifier allows nothing
        (["v=spf1 -all a:gw.example.nl"], {}, "ok", "fail", "ok"),  # after `all`: never reached
        (["v=spf1 a:gw.example.nl +all"], {}, "ok", "ok", "fail"),
        (["v=spf1 a:gw.example.nl all"], {}, "ok", "ok", "fail"),  # no qualifier is `+`
        (["v=spf1 a:gw.example.nl ?all"], {}, "ok", "ok", "warn"),
        (["v=spf1 a:gw.example.nl"], {}, "ok", "ok", "warn"),  # no `all`: neutral
        (["v=spf1 include:_spf.isp.nl -all"], {"_spf.isp.nl": ["v=spf1 a:gw.example.nl -all"]}, "ok", "ok", "ok"),
        (["v=spf1 include:_spf.isp.nl -all"], {"_spf.isp.nl": ["not spf"]}, "ok", "fail", "ok"),
        (["v=spf1 redirect=_spf.isp.nl"], {"_spf.isp.nl": ["v=spf1 a:gw.example.nl -all"]}, "ok", "ok", "ok"),
        (["v=spf1 include:a.nl -all"], {"a.nl": ["v=spf1 include:hospital.nl -all"]}, "ok", "fail", "ok"),  # a loop
    ],
)
def test_spf(
    txts: list[str], others: dict[str, list[str]], exist: str, gateway: str, policy: str
) -> None:
    checks = by_id(dh.spf_checks("hospital.nl", ["google-site-verification=x", *txts], MECH, others))
    assert checks["auth_spf_exist"].status == exist
    assert checks["auth_spf_gateway"].status == gateway
    assert checks["auth_spf_policy"].status == policy


def test_spf_missing_or_doubled_fails_and_says_what_to_publish() -> None:
    (missing,) = dh.spf_checks("hospital.nl", ["v=spf10 nope", "other"], MECH, {})
    assert (missing.status, missing.problem) == (Status.FAIL, "missing")
    assert missing.expected == "v=spf1 a:gw.example.nl ~all"
    (two,) = dh.spf_checks("hospital.nl", ["v=spf1 -all", "v=spf1 a:gw.example.nl -all"], MECH, {})
    assert (two.status, two.problem) == (Status.FAIL, "multiple")  # RFC 7208 §4.5: permerror


def test_spf_targets_skip_macros() -> None:
    assert dh.spf_targets("v=spf1 include:_spf.A.nl. ?include:%{d}.x.nl redirect=b.nl") == [
        "_spf.a.nl",
        "b.nl",
    ]


# -- DMARC (RFC 7489) --------------------------------------------------------------------
def dmarc(records: list[str], *, at: str = "_dmarc.hospital.nl", dkim: str | None = "hospital.nl",
          return_path: str = "hospital.nl") -> dict[str, HealthCheck]:
    return by_id(
        dh.dmarc_checks("hospital.nl", [(at, records)], dkim_domain=dkim, return_path_domain=return_path)
    )


def test_dmarc_states() -> None:
    good = dmarc(["v=DMARC1; p=reject; adkim=s"])
    assert [c.status for c in good.values()] == [Status.OK, Status.OK, Status.OK]
    assert dmarc([])["auth_dmarc_exist"].problem == "missing"
    assert dmarc(["v=DMARC1; p=none", "v=DMARC1; p=reject"])["auth_dmarc_exist"].problem == "multiple"
    # §6.6.3: a TXT record not starting with v=DMARC1 is no DMARC record at all
    assert dmarc(["p=reject; v=DMARC1"])["auth_dmarc_exist"].problem == "missing"
    assert dmarc(["v=DMARC1 p=reject"])["auth_dmarc_exist"].problem == "invalid"  # §6.4: tags need ;
    assert dmarc(["v=DMARC1; p=maybe"])["auth_dmarc_exist"].problem == "invalid"
    assert dmarc(["v=DMARC1; p=none"])["auth_dmarc_policy"].status == Status.WARN
    assert dmarc(["v=DMARC1; p=reject; pct=20"])["auth_dmarc_policy"].problem == "pct"


def test_dmarc_found_at_the_parent_uses_its_subdomain_policy() -> None:
    checks = by_id(
        dh.dmarc_checks(
            "afdeling.hospital.nl",
            [("_dmarc.afdeling.hospital.nl", []), ("_dmarc.hospital.nl", ["v=DMARC1; p=reject; sp=none"])],
            dkim_domain="afdeling.hospital.nl",
            return_path_domain="afdeling.hospital.nl",
        )
    )
    assert checks["auth_dmarc_exist"].record == "_dmarc.hospital.nl"
    assert checks["auth_dmarc_policy"].problem == "policy_none"
    assert dh.dmarc_lookup_names("afdeling.hospital.nl") == ["_dmarc.afdeling.hospital.nl", "_dmarc.hospital.nl"]


def test_dmarc_alignment_with_what_secumail_signs() -> None:
    # No key signs this domain's mail: DMARC fails at receivers.
    assert dmarc(["v=DMARC1; p=reject"], dkim=None)["auth_dmarc_alignment"].status == Status.FAIL
    # The gateway's own domain signs (account fallback): not aligned, strict or relaxed.
    assert dmarc(["v=DMARC1; p=reject"], dkim="gw.example.nl")["auth_dmarc_alignment"].status == Status.FAIL
    # With bounce addresses the return path is the gateway's: DMARC passes on DKIM alone.
    info = dmarc(["v=DMARC1; p=reject; aspf=s"], return_path="gw.example.nl")["auth_dmarc_alignment"]
    assert (info.status, info.problem) == (Status.INFO, "dkim_only")
    assert dh.aligned("mail.hospital.nl", "hospital.nl", strict=False)
    assert not dh.aligned("mail.hospital.nl", "hospital.nl", strict=True)


# -- DKIM and ownership --------------------------------------------------------------------
def test_a_signing_key_that_is_gone_fails_a_new_one_not_yet_published_warns() -> None:
    gone = dh.DkimFact("s1._domainkey.h.nl", "rsa-sha256", True, False, [], "v=DKIM1; k=rsa; p=AAA")
    other = dh.DkimFact("s1._domainkey.h.nl", "rsa-sha256", True, False, ["v=DKIM1; p=BBB"], "v=DKIM1; p=AAA")
    new = dh.DkimFact("s2._domainkey.h.nl", "ed25519-sha256", False, False, [], "v=DKIM1; k=ed25519; p=C")
    ok = dh.DkimFact("s3._domainkey.h.nl", "rsa-sha256", True, True, ["v=DKIM1; p=D"], "v=DKIM1; p=D")
    checks = dh.dkim_checks([gone, other, new, ok])
    assert [(c.status, c.problem) for c in checks] == [
        (Status.FAIL, "missing"),
        (Status.FAIL, "mismatch"),
        (Status.WARN, "not_yet_published"),
        (Status.OK, ""),
    ]
    assert dh.dkim_checks([])[0].problem == "no_keys"


def test_ownership() -> None:
    ok = dh.ownership_check("_secumail.h.nl", ["secumail-verification=t"], "secumail-verification=t", True)
    assert ok.status == Status.OK
    wrong = dh.ownership_check("_secumail.h.nl", ["secumail-verification=x"], "secumail-verification=t", False)
    assert (wrong.status, wrong.problem) == (Status.FAIL, "mismatch")


# -- the inbound part -------------------------------------------------------------------
def probe(**kw: object) -> dh.MxFact:
    base: dict[str, object] = dict(
        host="mx.h.nl", ip="192.0.2.1", route="verified", ok=True, reason="", tls_version="TLSv1.3",
        certificate_names=["mx.h.nl"], tlsa_records=0, tlsa_secure=False, address_secure=False,
    )
    return dh.MxFact(**{**base, **kw})  # type: ignore[arg-type]


def test_inbound_checks() -> None:
    assert [c.problem for c in dh.inbound_checks("h.nl", dh.InboundFacts(null_mx=True))] == ["null_mx"]
    facts = dh.InboundFacts(
        hosts=["mx.h.nl"],
        probes=[
            probe(tls_version=None, ok=False, reason="no STARTTLS", host="a"),
            probe(tls_version="TLSv1", ok=False, reason="TLSv1 refused", host="b"),
            probe(tlsa_records=1, tlsa_secure=True, route="dane", host="c"),
            probe(tlsa_records=1, tlsa_secure=True, ok=False, reason="no TLSA matched", host="d"),
            probe(route=None, tls_version=None, ok=False, reason="not in the MTA-STS policy", host="e"),
        ],
        sts_mode="testing",
        tlsrpt_txt=["v=TLSRPTv1; rua=ftp://x"],
    )
    got = [(c.id, c.record.split(" ")[0], c.status) for c in dh.inbound_checks("h.nl", facts)]
    assert ("dnssec_mx_exist", "h.nl", Status.WARN) in got
    assert ("starttls_tls_available", "a", Status.FAIL) in got
    assert ("starttls_tls_version", "b", Status.FAIL) in got
    assert ("starttls_dane_valid", "c", Status.OK) in got
    assert ("starttls_dane_valid", "d", Status.FAIL) in got
    assert ("starttls_tls_available", "e", Status.FAIL) in got
    assert ("mta_sts", "_mta-sts.h.nl", Status.WARN) in got
    assert ("tlsrpt_exist", "_smtp._tls.h.nl", Status.FAIL) in got
    # Inbound failures are shown, never alerted: they are not records Secumail relies on.
    report = dh.HealthReport("h.nl", 1.0, dh.inbound_checks("h.nl", facts))
    assert report.status == Status.FAIL and report.problems == []


# -- what is a broken record ---------------------------------------------------------------
def test_a_recommended_record_never_published_is_shown_but_not_alerted() -> None:
    never = dh.HealthReport("h.nl", 1.0, dh.spf_checks("h.nl", [], MECH, {}))
    assert never.status == Status.FAIL and never.problems == []
    worked = dh.HealthReport("h.nl", 2.0, dh.spf_checks("h.nl", [f"v=spf1 {MECH} -all"], MECH, {}))
    broke = dh.HealthReport("h.nl", 3.0, dh.spf_checks("h.nl", [], MECH, {}), worked.watched)
    assert [c.id for c in broke.problems] == ["auth_spf_exist"]
    # The memory of what worked survives the round trip through the store.
    again = dh.HealthReport.from_dict(broke.to_dict())
    assert again.problems == broke.problems and again.watched == broke.watched


def test_required_records_always_alert() -> None:
    report = dh.HealthReport("h.nl", 1.0, [dh.ownership_check("_secumail.h.nl", [], "t", False)])
    assert [c.id for c in report.problems] == ["secumail_ownership"]


# -- texts -----------------------------------------------------------------------------
def test_alert_texts_in_both_languages() -> None:
    checks = [
        *dh.dkim_checks([dh.DkimFact("s._domainkey.h.nl", "rsa-sha256", True, False, [], "v=DKIM1; p=K")]),
        dh.ownership_check("_secumail.h.nl", [], "secumail-verification=t", False),
    ]
    texts = dh.alert_texts(dh.HealthReport("h.nl", 1.0, checks), raised=True)
    assert texts["en"].subject == "2 problems with the DNS records of h.nl"
    assert texts["nl"].subject == "2 problemen met de DNS-records van h.nl"
    assert "Publish it again: v=DKIM1; p=K" in texts["en"].body
    assert "Publiceer het opnieuw: v=DKIM1; p=K" in texts["nl"].body
    assert "_secumail.h.nl" in texts["nl"].body
    fixed = dh.alert_texts(dh.HealthReport("h.nl", 2.0, []), raised=False)
    assert "in order again" in fixed["en"].subject and "weer in orde" in fixed["nl"].subject


def test_every_problem_has_advice_in_both_languages() -> None:
    for problem, texts in dh.ADVICE.items():
        assert set(texts) == {"en", "nl"}, problem
        assert texts["en"] != texts["nl"], problem
    for check_id, titles in dh.TITLES.items():
        assert set(titles) == {"en", "nl"}, check_id
    c = HealthCheck("auth_dmarc_policy", Part.SENDING, Status.WARN, "_dmarc.h.nl", "", "policy_none")
    assert dh.advice(c, "h.nl", "nl-NL").startswith("p=none kijkt")
    assert dh.advice(c, "h.nl", "de").startswith("p=none only")  # the fallback: English


def test_hostile_dns_text_cannot_add_lines() -> None:
    evil = "v=spf1 -all\r\nSubject: x\u2028more\x00" + "y" * 1000
    (c,) = dh.spf_checks("h.nl", ["v=spf1 -all", evil], MECH, {})
    assert "\r" not in c.found and "\n" not in c.found and "\u2028" not in c.found and "\x00" not in c.found
    assert len(c.found) <= dh.MAX_FOUND
    body = dh.alert_texts(dh.HealthReport("h.nl", 1.0, [c], frozenset({c.key})), raised=True)["en"].body
    assert not any(line.startswith("Subject:") for line in body.splitlines())
