"""Spoofing across tenants: account A (hospital.test) tries to send as account B
(bank.test), in the envelope and in every header field that names an author or sender
(RFC 5321 §4.1.1.2; RFC 5322 §3.6.2 From/Sender, §3.6.6 Resent-*; RFC 2047; RFC 5890).

A sender may only send from domains its own account has verified (closed network): every
such attempt is refused with 550 5.7.1 and nothing is queued or delivered. The address
is read strictly (comments, quoted strings, groups, encoded words, IDN); what a receiver
would show as the author must be one of A's own domains.
"""

from __future__ import annotations

import base64

import pytest

from tests.e2e.world import make_message
from tests.security.attack import LISTENERS, accepted, delivered, marker, received_with, session
from tests.security.site import *  # noqa: F403  (module-scoped gateway fixtures)
from tests.security.site import Site

HOMOGRAPH = "hоspital.test"  # Cyrillic "о": xn--hspital-9ig.test, not hospital.test

ENVELOPE = {
    "B's domain": "<alice@bank.test>",
    "B's domain, upper case": "<alice@BANK.TEST>",
    "B's domain, trailing dot": "<alice@bank.test.>",
    "source route through A's domain": "<@hospital.test:alice@bank.test>",
    "quoted local part naming A": '<"alice@hospital.test"@bank.test>',
    "percent hack naming A": "<alice%hospital.test@bank.test>",
    "A's domain as a label of B's": "<alice@hospital.test.bank.test>",
    "subdomain of A's domain": "<alice@mail.hospital.test>",
    "IDN homograph of A's domain": f"<alice@{HOMOGRAPH}> SMTPUTF8",
    "IDN homograph, A-label": "<alice@xn--hspital-9ig.test>",
    "null sender": "<>",
}


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mail_from", ENVELOPE.values(), ids=ENVELOPE.keys())
def test_envelope_sender_of_another_tenant_is_refused(mail_from: str, listener: str, site: Site) -> None:
    with session(site.gw, listener, site.a) as s:
        code, text = s.cmd(f"MAIL FROM:{mail_from}")
        assert (code, text[:5]) == (550, "5.7.1"), text
        assert s.cmd("RCPT TO:<x@clinic.test>") == (503, "5.5.1 Need MAIL before RCPT")


def test_utf8_envelope_sender_without_smtputf8_is_refused(site: Site) -> None:
    with session(site.gw, "starttls", site.a) as s:
        code, text = s.cmd(f"MAIL FROM:<alice@{HOMOGRAPH}>")
        assert (code, text[:5]) == (553, "5.6.7"), text


def _submit_headers(site: Site, headers: str, mark: str, listener: str = "starttls") -> tuple[int, str]:
    """A sends a message with envelope sender alice@hospital.test and these header fields."""
    with session(site.gw, listener, site.a) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test> SMTPUTF8")[0] == 250
        assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        head = headers.replace("\n", "\r\n") + f"\r\nTo: x@clinic.test\r\nSubject: {mark}\r\n"
        s.send(head.encode() + b"\r\nHello.\r\n.\r\n")
        return s.reply()


def _assert_refused(site: Site, headers: str, listener: str = "starttls") -> None:
    before = accepted(site.gw)
    mark = marker()
    code, text = _submit_headers(site, headers, mark, listener)
    assert (code, text[:5]) == (550, "5.7.1"), f"{headers!r}: {code} {text}"
    assert accepted(site.gw) == before
    assert received_with(mark, site.clinic) == []


FROM_HEADER = {
    "B's address": "From: bob@bank.test",
    "B's address with a name": "From: Bob <bob@bank.test>",
    "display name shows A's address": 'From: "alice@hospital.test" <bob@bank.test>',
    "unquoted display name shows A's address": "From: alice@hospital.test <bob@bank.test>",
    "encoded display name shows A's address": "From: =?utf-8?q?alice=40hospital.test?= <bob@bank.test>",
    "encoded word instead of an address": "From: =?utf-8?q?bob=40bank.test?=",
    "encoded word with A's address inside the brackets": "From: <=?utf-8?q?alice=40hospital.test?=> bob@bank.test",
    "comment first shows A's address": "From: (alice@hospital.test) bob@bank.test",
    "comment after shows A's address": "From: bob@bank.test (alice@hospital.test)",
    "nested comment": "From: (a (alice@hospital.test) b) bob@bank.test",
    "comment holding the angle address": "From: bob@bank.test (<alice@hospital.test>)",
    "group with B's address": "From: group: bob@bank.test;",
    "group with A's and B's addresses": "From: group: alice@hospital.test, bob@bank.test;",
    "empty group": "From: undisclosed-recipients: ;",
    "address list": "From: alice@hospital.test, bob@bank.test",
    "obsolete route": "From: <@hospital.test:bob@bank.test>",
    "text after the address": "From: <alice@hospital.test> <bob@bank.test>",
    "IDN homograph of A's domain": f"From: alice@{HOMOGRAPH}",
    "IDN homograph, A-label": "From: Alice <alice@xn--hspital-9ig.test>",
    "A's domain as a label of B's": "From: alice@hospital.test.bank.test",
    "upper-case B's domain": "From: bob@BANK.TEST",
    "two From fields, A first": "From: alice@hospital.test\nFrom: bob@bank.test",
    "two From fields, B first": "From: bob@bank.test\nFrom: alice@hospital.test",
    "two From fields, different case": "From: alice@hospital.test\nFROM: bob@bank.test",
    "From folded into a second From": "From: alice@hospital.test\n From: bob@bank.test",
    "space before the colon": "From : bob@bank.test\nFrom: alice@hospital.test",
    "field name with a Cyrillic о": "Frоm: bob@bank.test\nFrom: alice@hospital.test",
    "header section opens with a continuation line": " From: bob@bank.test\nFrom: alice@hospital.test",
    "no From at all": "Sender: alice@hospital.test",
    "unbalanced quote": 'From: "alice@hospital.test <bob@bank.test>',
}


@pytest.mark.parametrize("headers", FROM_HEADER.values(), ids=FROM_HEADER.keys())
def test_from_header_naming_another_tenant_is_refused(headers: str, site: Site) -> None:
    _assert_refused(site, headers)


SENDER_AND_RESENT = {
    "Sender": "From: alice@hospital.test\nSender: bob@bank.test",
    "Sender with A's address as display name": (
        'From: alice@hospital.test\nSender: "alice@hospital.test" <bob@bank.test>'
    ),
    "Resent-From": "From: alice@hospital.test\nResent-From: bob@bank.test",
    "Resent-Sender": "From: alice@hospital.test\nResent-From: alice@hospital.test\nResent-Sender: bob@bank.test",
    "Resent-From, second block": (
        "Resent-From: bob@bank.test\nResent-Date: Thu, 26 Nov 2026 12:00:00 +0000\n"
        "Resent-From: alice@hospital.test\nFrom: alice@hospital.test"
    ),
}


@pytest.mark.parametrize("headers", SENDER_AND_RESENT.values(), ids=SENDER_AND_RESENT.keys())
def test_sender_and_resent_fields_naming_another_tenant_are_refused(headers: str, site: Site) -> None:
    _assert_refused(site, headers)


DISPLAY_NAME_ONLY = {
    "display name is B's address": 'From: "bob@bank.test" <alice@hospital.test>',
    "encoded display name is B's address": "From: =?utf-8?b?Ym9iQGJhbmsudGVzdA==?= <alice@hospital.test>",
    "encoded display name is B's angle address": "From: =?utf-8?q?=3Cbob=40bank.test=3E?= <alice@hospital.test>",
}


@pytest.mark.parametrize("headers", DISPLAY_NAME_ONLY.values(), ids=DISPLAY_NAME_ONLY.keys())
def test_display_name_posing_as_another_tenants_address_is_refused(headers: str, site: Site) -> None:
    """The address is A's own, but the name a mail reader shows (decoded, RFC 2047 §5
    allows encoded words there) is an address in B's domain."""
    _assert_refused(site, headers)


@pytest.mark.parametrize("listener", LISTENERS)
def test_tenant_b_cannot_send_as_a_either(listener: str, site: Site) -> None:
    with session(site.gw, listener, site.b) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[:1] == (550,)
        assert s.cmd("MAIL FROM:<bob@bank.test>")[0] == 250
        assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.send(make_message("alice@hospital.test", ["x@clinic.test"], marker()) + b".\r\n")
        code, text = s.reply()
        assert (code, text[:5]) == (550, "5.7.1"), text


LEGITIMATE = {
    "plain": "From: alice@hospital.test",
    "name": "From: Alice Example <alice@hospital.test>",
    "own address as display name": 'From: "alice@hospital.test" <alice@hospital.test>',
    "encoded name": "From: =?utf-8?q?Zo=C3=AB_de_Vries?= <alice@hospital.test>",
    "comment": "From: alice@hospital.test (Alice)",
    "Sender in own domain": "From: alice@hospital.test\nSender: secretary@hospital.test",
}


@pytest.mark.parametrize("headers", LEGITIMATE.values(), ids=LEGITIMATE.keys())
def test_own_domain_in_every_form_is_accepted(headers: str, site: Site) -> None:
    """The rules above refuse spoofing, not ordinary mail: A's own forms are delivered."""
    mark = marker()
    code, text = _submit_headers(site, headers, mark)
    assert (code, text[:5]) == (250, "2.0.0"), text
    assert delivered(site.clinic, mark).rcpt_to == ["x@clinic.test"]


def test_authorization_identity_of_another_tenant_is_refused(site: Site) -> None:
    """AUTH PLAIN with B's username as authorization identity and A's credentials
    (RFC 4616 §2): logging in as someone else is not offered."""
    token = f"{site.b.username}\0{site.a.username}\0{site.a.password}"
    with session(site.gw, "starttls") as s:
        code, text = s.cmd("AUTH PLAIN " + base64.b64encode(token.encode()).decode())
        assert (code, text[:5]) == (535, "5.7.8"), text
        assert s.cmd("MAIL FROM:<bob@bank.test>") == (530, "5.7.0 Authentication required")
