"""SMTP smuggling (CVE-2023-51764/51765/51766 class) on both listeners that take DATA.

A client ends its data with a sequence that some receiver might take for end-of-data and
follows it with a second, smuggled transaction. Secumail must never let that second
message out. In both modes of `submission.bare_newline` only CRLF "." CRLF ends data, a
bare CR is refused outright (RFC 5321 §2.3.8, 554 5.5.2, then the session closes) and NUL
is refused at the end of data. A bare LF is refused like a bare CR in `reject` mode; in
`normalize` mode (the default, Postfix 3.9's) it is taken as CRLF, so a look-alike such
as `\n.\n` is text of the one message, and its "." line reaches the recipient's MX
dot-stuffed. Whatever it does deliver, the harness MX must never see a bare CR, a bare LF
or a NUL.

The module runs twice, once per mode: its gateway (module-scoped) is parametrized.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.security.attack import (
    LISTENERS,
    accepted,
    assert_clean,
    delivered,
    marker,
    received_with,
    session,
)
from tests.security.site import *  # noqa: F403  (module-scoped gateway fixtures)
from tests.security.site import Site


@pytest.fixture(scope="module", params=["normalize", "reject"])
def gateway_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"submission__bare_newline": request.param}


# A fresh fake internet per mode: a second `site` in the same DNS would give clinic.test's
# MX host a second address, and deliveries could reach the first mode's MX.
@pytest.fixture(scope="module")
def dns(gateway_settings: dict[str, Any]) -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns() as server:
        yield server


@pytest.fixture(scope="module")
def mx_port(gateway_settings: dict[str, Any]) -> int:
    return free_port()  # a new port: the MX servers of the first mode are stopped


@pytest.fixture(scope="module")
def mode(gateway_settings: dict[str, Any]) -> str:
    return gateway_settings["submission__bare_newline"]

# The smuggled second transaction; it ends with a real CRLF.CRLF so a gateway that kept
# reading would end the first message there and answer.
SMUGGLED = (
    b"MAIL FROM:<alice@hospital.test>\r\n"
    b"RCPT TO:<victim@other.test>\r\n"
    b"DATA\r\n"
    b"From: alice@hospital.test\r\nTo: victim@other.test\r\nSubject: smuggled\r\n\r\n"
    b"smuggled\r\n.\r\n"
)

# End-of-data look-alikes built from bare CR or bare LF: with a bare CR (either mode) or a
# bare LF in reject mode, 554 5.5.2 and the connection closed; with only bare LFs in
# normalize mode, text of the one message (which ends at the smuggled part's CRLF.CRLF).
BARE = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "LF LF.LF LF": b"\n\n.\n\n",
    "CRLF.CR CRLF": b"\r\n.\r\r\n",
    "CR CRLF.CRLF": b"\r\r\n.\r\n",
    "CRLF.LF CRLF": b"\r\n.\n\r\n",
    "LF NUL.LF": b"\n\x00.\n",
    "CR NUL.CR": b"\r\x00.\r",
}

# Look-alikes built from NUL with only proper CRLFs: refused at the end of data (5xx).
NUL = {
    "CRLF NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL CRLF": b"\r\n.\x00\r\n",
    "NUL.NUL": b"\x00.\x00",
    "CRLF NUL.NUL CRLF": b"\r\n\x00.\x00\r\n",
    "NUL CRLF.CRLF NUL": b"\x00\r\n.\r\n\x00",
}


def _first(site: Site, listener: str, mark: str):
    s = session(site.gw, listener, site.a)
    assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
    assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    head = f"From: alice@hospital.test\r\nTo: x@clinic.test\r\nSubject: {mark}\r\n\r\nhello".encode()
    return s, head


def _has_bare_cr(ending: bytes) -> bool:
    return b"\r" in ending.replace(b"\r\n", b"")


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("ending", BARE.values(), ids=BARE.keys())
def test_bare_cr_lf_end_of_data_never_smuggles(
    ending: bytes, listener: str, site: Site, mode: str
) -> None:
    """A bare CR (either mode) or a bare LF in `reject` mode: refused, connection closed.
    Only bare LFs in `normalize` mode (Postfix 3.9): the look-alike does not end the data;
    the smuggled transaction is body text of the first message, which ends at its
    CRLF.CRLF. Nothing reaches the victim; the "." line reaches the MX stuffed, so it
    cannot end the data there."""
    before = accepted(site.gw)
    mark = marker()
    s, head = _first(site, listener, mark)
    s.send(head + ending + SMUGGLED.replace(b"smuggled", mark.encode()))
    code, text = s.reply()
    if mode == "reject" or _has_bare_cr(ending):
        assert (code, text[:5]) == (554, "5.5.2"), text
        assert s.closed(), "after a bare line ending nothing further is read"
        assert b"250" not in s.buf, "no second reply: the smuggled transaction was never read"
        assert accepted(site.gw) == before, "neither message was accepted"
        assert received_with(mark, site.clinic, site.other) == []
        return
    if b"\x00" in ending:
        assert (code, text[:5]) == (554, "5.6.0"), text
        assert s.cmd("QUIT")[0] == 221, "the session stayed in step: one reply for the data"
        assert accepted(site.gw) == before
        assert received_with(mark, site.clinic, site.other) == []
        return
    assert (code, text[:5]) == (250, "2.0.0"), text
    assert s.cmd("QUIT")[0] == 221, "one reply for the data: no smuggled command was read"
    assert accepted(site.gw) == before + 1, "exactly one message"
    got = delivered(site.clinic, mark)
    assert got.rcpt_to == ["x@clinic.test"]
    text = (b"hello" + ending).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as CRLF
    smuggled = b"MAIL FROM:<alice@hospital.test>\r\nRCPT TO:<victim@other.test>\r\n"
    assert text + smuggled in got.data
    # The lone "." line crossed the wire stuffed: RFC 5321 §4.5.2, net/smtp_client.py dot_stuff.
    assert text.replace(b"\r\n.\r\n", b"\r\n..\r\n") + smuggled in got.wire
    assert b"\r\n.\r\n" not in b"\r\n" + got.wire, "nothing on the wire looks like the end"
    assert received_with(mark, site.other) == [], "the smuggled transaction never became a message"
    assert_clean(got)


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("ending", NUL.values(), ids=NUL.keys())
def test_nul_end_of_data_is_refused_and_nothing_smuggled(
    ending: bytes, listener: str, site: Site
) -> None:
    before = accepted(site.gw)
    mark = marker()
    s, head = _first(site, listener, mark)
    s.send(head + ending + SMUGGLED.replace(b"smuggled", mark.encode()))
    code, text = s.reply()
    assert code >= 500 and text[:2] == "5.", f"NUL in data must be refused: {code} {text}"
    s.cmd("QUIT")
    assert accepted(site.gw) == before, "neither message was accepted"
    assert received_with(mark, site.clinic, site.other) == []


@pytest.mark.parametrize("listener", LISTENERS)
def test_dot_stuffed_end_look_alike_is_delivered_as_one_message(listener: str, site: Site) -> None:
    """A legitimate body line "." (sent stuffed, "..") followed by SMTP commands as text:
    one message, delivered with the line re-stuffed, so the next hop does not see the end
    of data there and the text after it never becomes a transaction."""
    mark = marker()
    s, head = _first(site, listener, mark)
    smuggled = SMUGGLED.replace(b"smuggled", mark.encode()).replace(b"\r\n.\r\n", b"\r\n..\r\n")
    s.send(head + b"\r\n..\r\n" + smuggled + b".\r\n")
    code, text = s.reply()
    assert (code, text[:5]) == (250, "2.0.0"), text
    s.cmd("QUIT")
    got = delivered(site.clinic, mark)
    assert got.rcpt_to == ["x@clinic.test"]
    assert b"hello\r\n.\r\nMAIL FROM:<alice@hospital.test>\r\n" in got.data
    assert b"hello\r\n..\r\nMAIL FROM:<alice@hospital.test>\r\n" in got.wire  # re-stuffed
    assert f"\r\n{mark}\r\n.\r\n".encode() in got.data
    assert received_with(mark, site.other) == [], "the text after '.' never became a message"
    assert_clean(got)


@pytest.mark.parametrize("listener", LISTENERS)
def test_bdat_is_neither_offered_nor_accepted(listener: str, site: Site) -> None:
    """CHUNKING (RFC 3030) is another way to frame data: not offered, so BDAT is an
    unknown command, and its would-be chunk is read as (refused) command lines."""
    before = accepted(site.gw)
    mark = marker()
    s = session(site.gw, listener, site.a)
    _code, text = s.cmd("EHLO client.test")
    assert "CHUNKING" not in text.split("\n")
    assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
    assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
    chunk = f"From: alice@hospital.test\r\nSubject: {mark}\r\n\r\nhi\r\n".encode()
    s.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert s.reply() == (500, "5.5.2 Command not recognised")
    s.cmd("QUIT")
    assert accepted(site.gw) == before
    assert received_with(mark, site.clinic) == []


@pytest.mark.parametrize("listener", LISTENERS)
def test_legacy_client_with_lf_line_ends(listener: str, site: Site, mode: str) -> None:
    """A PHP application or hospital system that ends its command and text lines with a
    bare LF (and the data with CRLF.CRLF). normalize (Postfix 3.9): commands and lines are
    taken as if they ended in CRLF; the message arrives with CRLF only, its "." line
    (sent stuffed, "..\\n") stuffed on the wire. reject: every such command gets 500 5.5.2
    and the session goes on; bare LF in data is 554 5.5.2 and the connection closes."""
    mark = marker()
    s = session(site.gw, listener, site.a)
    s.send(b"MAIL FROM:<alice@hospital.test>\n")
    if mode == "reject":
        assert s.reply() == (500, "5.5.2 Command lines must end with CRLF")
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
        assert s.cmd("RCPT TO:<x@clinic.test>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.send(f"From: alice@hospital.test\nSubject: {mark}\n\nhi\r\n.\r\n".encode())
        code, text = s.reply()
        assert (code, text[:5]) == (554, "5.5.2"), text
        assert s.closed()
        assert received_with(mark, site.clinic) == []
        return
    assert s.reply()[0] == 250
    s.send(b"RCPT TO:<x@clinic.test>\n")
    assert s.reply()[0] == 250
    s.send(b"DATA\n")
    assert s.reply()[0] == 354
    s.send(
        f"From: alice@hospital.test\nTo: x@clinic.test\nSubject: {mark}\n\n"
        "Uitslag:\n..\n..niet leeg\nlaatste regel\r\n.\r\n".encode()
    )
    code, text = s.reply()
    assert (code, text[:5]) == (250, "2.0.0"), text
    s.send(b"QUIT\n")
    assert s.reply()[0] == 221
    got = delivered(site.clinic, mark)
    assert got.data.endswith(b"\r\n\r\nUitslag:\r\n.\r\n.niet leeg\r\nlaatste regel\r\n")
    assert b"\r\nUitslag:\r\n..\r\n..niet leeg\r\n" in got.wire
    assert_clean(got)


@pytest.mark.parametrize("listener", LISTENERS)
def test_bare_cr_in_a_command_is_refused_in_both_modes(listener: str, site: Site) -> None:
    s = session(site.gw, listener, site.a)
    s.send(b"NOOP\rRSET\n")
    code, text = s.reply()
    assert (code, text[:5]) == (500, "5.5.2"), text
    assert s.cmd("NOOP") == (250, "2.0.0 Ok"), "one reply: nothing after the CR became a command"


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_header_behind_a_bare_lf_is_judged_like_any_other(listener: str, site: Site, mode: str) -> None:
    """normalize: `Subject: x<LF>Sender: <B's address>` is two header fields, and the
    originator check sees the second (550 5.7.1): what is judged is what would be relayed.
    reject: the bare LF itself is refused."""
    before = accepted(site.gw)
    mark = marker()
    s, _head = _first(site, listener, mark)
    s.send(
        f"From: alice@hospital.test\r\nTo: x@clinic.test\r\nSubject: {mark}\nSender: bob@bank.test\r\n"
        "\r\nhello\r\n.\r\n".encode()
    )
    code, text = s.reply()
    if mode == "reject":
        assert (code, text[:5]) == (554, "5.5.2"), text
    else:
        assert (code, text[:5]) == (550, "5.7.1"), text
    assert accepted(site.gw) == before
    assert received_with(mark, site.clinic) == []
