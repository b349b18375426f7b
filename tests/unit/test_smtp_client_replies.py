"""The delivery client reads a recipient MX's replies (RFC 5321 §4.2) and, when one is
not SMTP, says in words which MX did what wrong — the text the sender's notice and
`message show` carry — never asyncio's "Separator is not found, and chunk exceed the
limit"."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from secumail.errors import ConnectError
from secumail.net.smtp_client import REPLY_LINE_LIMIT, SmtpConnection
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA

NAME = "mx1.clinic.test"
IP = "127.0.0.2"


@pytest.fixture
def mx(mx_factory: Callable[..., HarnessMx], test_ca: TestCA) -> HarnessMx:
    return mx_factory(IP, cert=test_ca.issue(NAME), hostname=NAME)


async def mail_from(mx: HarnessMx, test_ca: TestCA) -> str:
    """Open a verified-TLS session with the MX and send MAIL; the reply as text."""
    context = ssl.create_default_context(cafile=str(test_ca.ca_file))
    conn = await SmtpConnection.open(
        NAME, IP, mx.port, helo="gw.test", tls_context=context,
        connect_timeout=5, command_timeout=5,
    )
    try:
        return str(await conn.command("MAIL FROM:<alice@hospital.test>"))
    finally:
        conn.abort()


def test_an_overlong_reply_line_is_named_in_words(mx: HarnessMx, test_ca: TestCA) -> None:
    mx.script("mail", "250 2.1.0 " + "x" * (REPLY_LINE_LIMIT + 100))
    with pytest.raises(ConnectError) as caught:
        asyncio.run(mail_from(mx, test_ca))
    text = str(caught.value)
    assert text == (
        f"{NAME} [{IP}] sent a reply line longer than {REPLY_LINE_LIMIT} octets to MAIL "
        "(RFC 5321 §4.5.3.1.5 allows 512): not a valid SMTP reply"
    )
    assert "Separator" not in text and caught.value.command == "mail"
    assert not caught.value.permanent, "a broken server is tried again later"


def test_an_overlong_greeting_is_named_as_such(mx: HarnessMx, test_ca: TestCA) -> None:
    mx.script("connect", "220 " + "y" * (REPLY_LINE_LIMIT * 2))
    with pytest.raises(ConnectError) as caught:
        asyncio.run(mail_from(mx, test_ca))
    assert f"{NAME} [{IP}] sent a reply line longer than" in str(caught.value)
    assert "as its greeting" in str(caught.value)


def test_a_reply_line_a_little_over_512_octets_is_still_read(
    mx: HarnessMx, test_ca: TestCA
) -> None:
    # RFC 5321 §4.5.3.1: receive without limits "to the maximum extent possible"
    long_text = "ok " + "z" * 700
    mx.script("mail", f"250 2.1.0 {long_text}")
    assert asyncio.run(mail_from(mx, test_ca)) == f"250 2.1.0 {long_text}"
