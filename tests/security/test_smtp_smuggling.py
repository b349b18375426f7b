"""SMTP smuggling (CVE-2023-51764/51765/51766 class) on both listeners that take DATA.

A client ends its data with a sequence that some receiver might take for end-of-data and
follows it with a second, smuggled transaction. Secumail must never let that second
message out: it refuses bare CR and LF outright (RFC 5321 §2.3.8, 554 5.5.2, then closes)
and refuses NUL in data at the end of data; only CRLF "." CRLF ends data. Whatever it
does deliver, the harness MX must never see a bare CR, a bare LF or a NUL.
"""

from __future__ import annotations

import pytest

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

# The smuggled second transaction; it ends with a real CRLF.CRLF so a gateway that kept
# reading would end the first message there and answer.
SMUGGLED = (
    b"MAIL FROM:<alice@hospital.test>\r\n"
    b"RCPT TO:<victim@other.test>\r\n"
    b"DATA\r\n"
    b"From: alice@hospital.test\r\nTo: victim@other.test\r\nSubject: smuggled\r\n\r\n"
    b"smuggled\r\n.\r\n"
)

# End-of-data look-alikes built from bare CR or bare LF: 554 5.5.2, connection closed.
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


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("ending", BARE.values(), ids=BARE.keys())
def test_bare_cr_lf_end_of_data_is_refused_and_nothing_smuggled(
    ending: bytes, listener: str, site: Site
) -> None:
    before = accepted(site.gw)
    mark = marker()
    s, head = _first(site, listener, mark)
    s.send(head + ending + SMUGGLED.replace(b"smuggled", mark.encode()))
    code, text = s.reply()
    assert (code, text[:5]) == (554, "5.5.2"), text
    assert s.closed(), "after a bare line ending nothing further is read"
    assert b"250" not in s.buf, "no second reply: the smuggled transaction was never read"
    assert accepted(site.gw) == before, "neither message was accepted"
    assert received_with(mark, site.clinic, site.other) == []


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
