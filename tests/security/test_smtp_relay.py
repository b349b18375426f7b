"""Relay abuse: address forms that once made mail servers relay to a host other than the
one the address names (RFC 5321 §3.6.1, §4.1.1.3, Appendix C; RFC 2505 §2.5).

Authenticated customers may send to any external domain — the gateway is their relay —
but strictly to the mailbox as written, at the host its domain names: a `%` or `!` in
the local part is just part of the local part, a source route is ignored, a quoted
local part holding `@` stays quoted. Forms without a host name (IP literals, bare names,
two `@`) are refused with 501 5.1.3: they have no MX whose certificate could be checked.
Strangers (no AUTH) may not relay at all: 530 5.7.0 at MAIL, 503 5.5.1 after it.
"""

from __future__ import annotations

import base64

import pytest

from tests.e2e.world import make_message
from tests.security.attack import (
    ATTACKER,
    LISTENERS,
    accepted,
    connect,
    delivered,
    marker,
    received_with,
    session,
)
from tests.security.site import *  # noqa: F403  (module-scoped gateway fixtures)
from tests.security.site import Site

# RCPT argument → the exact mailbox delivered to clinic.test's MX (and nowhere else).
DELIVERED_AS_WRITTEN = {
    "percent hack": ("<user%other.test@clinic.test>", "user%other.test@clinic.test"),
    "percent hack twice": ("<user%other.test%third.test@clinic.test>", "user%other.test%third.test@clinic.test"),
    "bang path": ("<other.test!user@clinic.test>", "other.test!user@clinic.test"),
    "source route": ("<@other.test:user@clinic.test>", "user@clinic.test"),
    "source route, two hops": ("<@other.test,@third.test:user@clinic.test>", "user@clinic.test"),
    "quoted local part with @": ('<"user@other.test"@clinic.test>', '"user@other.test"@clinic.test'),
    "quoted percent hack": ('<"user%other.test"@clinic.test>', '"user%other.test"@clinic.test'),
    "trailing dot": ("<user@clinic.test.>", "user@clinic.test"),
    "upper-case domain": ("<user@CLINIC.TEST>", "user@clinic.test"),
}


@pytest.mark.parametrize(("rcpt", "mailbox"), DELIVERED_AS_WRITTEN.values(), ids=DELIVERED_AS_WRITTEN.keys())
def test_authenticated_relay_goes_only_to_the_mailbox_as_written(
    rcpt: str, mailbox: str, site: Site
) -> None:
    mark = marker()
    with session(site.gw, "starttls", site.a) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
        assert s.cmd(f"RCPT TO:{rcpt}") == (250, "2.1.5 Recipient ok")
        assert s.cmd("DATA")[0] == 354
        s.send(make_message("alice@hospital.test", [mailbox], mark) + b".\r\n")
        code, text = s.reply()
        assert (code, text[:5]) == (250, "2.0.0"), text
    message_id = text.rsplit(" ", 1)[1]
    got = delivered(site.clinic, mark)
    assert got.rcpt_to == [mailbox]
    shown = site.gw.wait_status(message_id, {"delivered"})
    assert [r["address"] for r in shown["recipients"]] == [mailbox]
    assert {a["mx"] for a in shown["attempts"]} == {"mx10.clinic.test"}
    assert received_with(mark, site.other) == [], "never reinterpreted to the other host"


REFUSED_RCPT = {
    "IPv4 literal": "<user@[127.0.0.1]>",
    "IPv4 literal of an MX": "<user@[127.0.0.13]>",
    "IPv6 literal": "<user@[IPv6:::1]>",
    "two @": "<user@other.test@clinic.test>",
    "unbalanced quote": '<"user@other.test@clinic.test>',
    "bare postmaster": "<postmaster>",
    "single-label domain": "<user@localhost>",
    "no angle brackets": "user@other.test",
    "text after the path": "<user@clinic.test>@other.test",
    "nested brackets": "<<user@other.test>>",
}


@pytest.mark.parametrize("rcpt", REFUSED_RCPT.values(), ids=REFUSED_RCPT.keys())
def test_addresses_without_a_host_name_are_refused(rcpt: str, site: Site) -> None:
    with session(site.gw, "starttls", site.a) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
        code, text = s.cmd(f"RCPT TO:{rcpt}")
        assert (code, text[:5]) == (501, "5.1.3"), text
        assert s.cmd("DATA") == (554, "5.5.1 No valid recipients")


@pytest.mark.parametrize("rcpt", ["user@127.0.0.1", "user@127.0.0.13"], ids=["loopback", "an MX's address"])
def test_all_numeric_domain_is_refused_at_rcpt(rcpt: str, site: Site) -> None:
    """`user@127.0.0.13` without brackets is neither a host name (RFC 3696 §2: no
    all-numeric top-level label) nor an address literal: refused at RCPT with a reason,
    never looked up, never connected to — although a harness MX listens there."""
    with session(site.gw, "starttls", site.a) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
        code, text = s.cmd(f"RCPT TO:<{rcpt}>")
        assert (code // 100, text[:5]) == (5, "5.1.3") and "IP address" in text, text
        assert s.cmd("DATA") == (554, "5.5.1 No valid recipients")


@pytest.mark.parametrize("listener", LISTENERS)
def test_unauthenticated_client_cannot_relay(listener: str, site: Site) -> None:
    before = accepted(site.gw)
    with session(site.gw, listener, source=ATTACKER) as s:
        for mail in ("MAIL FROM:<alice@hospital.test>", "MAIL FROM:<>",
                     "MAIL FROM:<x@other.test> AUTH=<alice@hospital.test>"):
            assert s.cmd(mail) == (530, "5.7.0 Authentication required")
        assert s.cmd("RCPT TO:<victim@other.test>") == (503, "5.5.1 Need MAIL before RCPT")
        assert s.cmd("DATA") == (503, "5.5.1 Need MAIL before DATA")
    assert accepted(site.gw) == before


def test_unauthenticated_pipelined_transaction_is_refused_and_cut_off(site: Site) -> None:
    """The whole relay attempt in one packet: MAIL, RCPT, DATA and the message. Every
    line after the refused MAIL is an error; the error limit ends the session."""
    before = accepted(site.gw)
    mark = marker()
    with session(site.gw, "starttls", source=ATTACKER) as s:
        body = make_message("alice@hospital.test", ["victim@other.test"], mark)
        s.send(b"MAIL FROM:<alice@hospital.test>\r\nRCPT TO:<victim@other.test>\r\nDATA\r\n"
               + body + b".\r\n")
        assert s.reply() == (530, "5.7.0 Authentication required")
        assert s.reply() == (503, "5.5.1 Need MAIL before RCPT")
        assert s.reply() == (503, "5.5.1 Need MAIL before DATA")
        replies = []
        while True:
            code, text = s.reply()
            replies.append((code, text[:5]))
            if code == 421:
                break
        assert replies[-1] == (421, "4.7.0"), replies
        assert all(code >= 500 for code, _ in replies[:-1]), replies
        assert s.closed()
    assert accepted(site.gw) == before
    assert received_with(mark, site.other, site.clinic) == []


def test_failed_login_does_not_open_the_relay(site: Site) -> None:
    with session(site.gw, "starttls", source=ATTACKER) as s:
        wrong = f"\0{site.a.username}\0not-the-password"
        assert s.cmd("AUTH PLAIN " + base64.b64encode(wrong.encode()).decode())[0] == 535
        assert s.cmd("MAIL FROM:<alice@hospital.test>") == (530, "5.7.0 Authentication required")


def test_mail_before_ehlo_is_refused(site: Site) -> None:
    with connect(site.gw, "implicit", source=ATTACKER) as s:
        assert s.cmd("MAIL FROM:<alice@hospital.test>") == (503, "5.5.1 Send EHLO first")
