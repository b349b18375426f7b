"""The harness MX behaves like a recipient server towards smtplib and raw clients.

RFC 5321 (commands, replies, dot-stuffing §4.5.2), RFC 3207 (STARTTLS, §4.2 discarding
pipelined plaintext), RFC 2920 (PIPELINING).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import warnings
from collections.abc import Callable

import pytest

from tests.harness.mx import HarnessMx
from tests.harness.pki import CertPair, TestCA

MxFactory = Callable[..., HarnessMx]
NAME = "mx1.example.test"


@pytest.fixture(scope="module")
def good_cert(test_ca: TestCA) -> CertPair:
    return test_ca.issue(NAME)


def client_context(test_ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(test_ca.ca_file))


def connect(mx: HarnessMx, tls_name: str = NAME) -> smtplib.SMTP:
    client = smtplib.SMTP(mx.host, mx.port, local_hostname="client.test", timeout=5)
    client._host = tls_name  # smtplib verifies TLS against the name it dialed; we dial an IP
    return client


class RawClient:
    """A line-level SMTP client, for pipelining and for watching the server hang up."""

    def __init__(self, mx: HarnessMx) -> None:
        self.sock = socket.create_connection((mx.host, mx.port), timeout=5)
        self.file = self.sock.makefile("rb")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_starttls_delivery_is_recorded(
    mx_factory: MxFactory, test_ca: TestCA, good_cert: CertPair
) -> None:
    mx = mx_factory("127.0.0.2", cert=good_cert)
    with connect(mx) as client:
        client.ehlo()
        assert client.has_extn("starttls") and client.has_extn("pipelining")
        client.starttls(context=client_context(test_ca))
        client.ehlo()
        assert not client.has_extn("starttls")
        body = b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n"
        client.sendmail("a@sender.test", ["b@example.test"], body, mail_options=["BODY=8BITMIME"])
    (message,) = mx.wait_for(1)
    assert message.mail_from == "a@sender.test"
    assert message.rcpt_to == ["b@example.test"]
    assert message.data == body
    assert message.mail_params["BODY"] == "8BITMIME" and "SIZE" in message.mail_params
    assert message.tls_version == "TLSv1.3" and message.cipher
    assert message.ehlo_name == "client.test"
    assert message.client_ip == "127.0.0.1"
    assert mx.connections == 1


def test_several_messages_on_one_connection(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    with connect(mx) as client:
        for n in range(3):
            client.sendmail("a@sender.test", [f"r{n}@example.test"], b"x\r\n")
    assert [m.rcpt_to for m in mx.wait_for(3)] == [[f"r{n}@example.test"] for n in range(3)]
    assert [m.tls_version for m in mx.received] == [None] * 3
    assert mx.connections == 1


@pytest.mark.parametrize("options", [{}, {"starttls": False}])
def test_starttls_not_offered(mx_factory: MxFactory, good_cert: CertPair, options: dict) -> None:
    mx = mx_factory("127.0.0.2", cert=None if not options else good_cert, **options)
    with connect(mx) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 502


def test_servers_share_the_port_on_different_addresses(mx_factory: MxFactory) -> None:
    first, second = mx_factory("127.0.0.2"), mx_factory("127.0.0.3")
    assert first.port == second.port
    for mx in (second, first):
        with connect(mx) as client:
            client.sendmail("a@sender.test", [f"to@{mx.host}"], b"x\r\n")
    assert [m.rcpt_to for m in first.wait_for(1)] == [["to@127.0.0.2"]]
    assert [m.rcpt_to for m in second.wait_for(1)] == [["to@127.0.0.3"]]


def test_scripted_rcpt_reply_then_default(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("rcpt", "450 4.2.0 Mailbox busy, try later")
    with connect(mx) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@sender.test", ["b@example.test"], b"x\r\n")
        assert refused.value.recipients["b@example.test"][0] == 450
        assert client.sendmail("a@sender.test", ["b@example.test"], b"x\r\n") == {}
    assert len(mx.wait_for(1)) == 1


def test_per_recipient_script_takes_precedence(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("rcpt", "451 4.3.0 generic")
    mx.script_rcpt("Bad@Example.test", "550 5.1.1 No such user")
    with connect(mx) as client:
        refused = client.sendmail(
            "a@sender.test", ["bad@example.test", "good@example.test", "c@example.test"], b"x\r\n"
        )
    assert refused == {
        "bad@example.test": (550, b"5.1.1 No such user"),
        "good@example.test": (451, b"4.3.0 generic"),  # the generic script was still there
    }
    assert mx.wait_for(1)[0].rcpt_to == ["c@example.test"]


def test_message_reply_decides_what_is_recorded(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("message", "451 4.3.0 Try again")
    mx.script("data", "554 5.7.1 Not now")
    with connect(mx) as client:
        with pytest.raises(smtplib.SMTPDataError) as first:
            client.sendmail("a@sender.test", ["b@example.test"], b"one\r\n")
        with pytest.raises(smtplib.SMTPDataError) as second:
            client.sendmail("a@sender.test", ["b@example.test"], b"two\r\n")
        client.sendmail("a@sender.test", ["b@example.test"], b"three\r\n")
    assert (first.value.smtp_code, second.value.smtp_code) == (554, 451)
    assert [m.data for m in mx.wait_for(1)] == [b"three\r\n"]


def test_421_reply_closes_the_connection(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("mail", "421 4.3.2 Shutting down")
    raw = RawClient(mx)
    assert raw.reply().startswith("220 ")
    raw.send("EHLO client.test\r\n")
    raw.reply()
    raw.send("MAIL FROM:<a@sender.test>\r\n")
    assert raw.reply() == "421 4.3.2 Shutting down"
    assert raw.file.read() == b""  # the server hung up
    raw.close()


def test_scripted_greeting(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("connect", "554 5.3.2 No service for you")
    with pytest.raises(smtplib.SMTPConnectError):
        connect(mx)
    with connect(mx) as client:  # the script is consumed: the next greeting is 220
        assert client.noop()[0] == 250
    assert mx.connections == 2


def test_pipelined_commands_are_all_answered(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    raw = RawClient(mx)
    raw.reply()
    raw.send("EHLO client.test\r\n")
    assert "250-PIPELINING" in raw.reply()
    raw.send("MAIL FROM:<a@sender.test> SIZE=10\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    assert [raw.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    raw.send("..x\r\n.\r\nRSET\r\nQUIT\r\n")
    assert [raw.reply()[:3] for _ in range(3)] == ["250", "250", "221"]
    raw.close()
    (message,) = mx.wait_for(1)
    assert message.data == b".x\r\n" and message.mail_params == {"SIZE": "10"}


def test_pipelining_can_be_left_out(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2", pipelining=False)
    with connect(mx) as client:
        client.ehlo()
        assert not client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")


def test_plaintext_after_starttls_is_discarded(
    mx_factory: MxFactory, test_ca: TestCA, good_cert: CertPair
) -> None:
    mx = mx_factory("127.0.0.2", cert=good_cert)
    raw = RawClient(mx)
    raw.reply()
    raw.send("EHLO client.test\r\n")
    raw.reply()
    raw.send("STARTTLS\r\nRSET\r\n")  # RSET is an injection attempt in clear
    assert raw.reply().startswith("220 ")
    tls = client_context(test_ca).wrap_socket(raw.sock, server_hostname=NAME)
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(100).startswith(b"250 2.0.0 Ok")
    tls.sendall(b"QUIT\r\n")
    assert tls.recv(100).startswith(b"221")
    tls.close()


def test_drop_mid_data(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.drop_mid_data()
    with connect(mx) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@sender.test", ["b@example.test"], b"line\r\n" * 10)
    assert mx.received == []
    with connect(mx) as client:
        client.sendmail("a@sender.test", ["b@example.test"], b"line\r\n")
    assert len(mx.wait_for(1)) == 1


def test_require_starttls(mx_factory: MxFactory, test_ca: TestCA, good_cert: CertPair) -> None:
    mx = mx_factory("127.0.0.2", cert=good_cert, require_starttls=True)
    with connect(mx) as client:
        client.ehlo()
        assert client.mail("a@sender.test")[0] == 530
        client.starttls(context=client_context(test_ca))
        client.ehlo()
        assert client.mail("a@sender.test")[0] == 250


def test_bad_certificate_fails_client_verification(mx_factory: MxFactory, test_ca: TestCA) -> None:
    mx = mx_factory("127.0.0.2", cert=test_ca.issue(NAME, expired=True))
    with connect(mx) as client:
        client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            client.starttls(context=client_context(test_ca))
    assert failure.value.verify_message == "certificate has expired"


def test_weak_certificate_is_served(mx_factory: MxFactory, test_ca: TestCA) -> None:
    mx = mx_factory("127.0.0.2", cert=test_ca.issue(NAME, key="rsa1024"))
    with connect(mx) as client:
        client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            client.starttls(context=client_context(test_ca))
    assert failure.value.verify_message == "EE certificate key too weak"


def tls10_client(test_ca: TestCA) -> ssl.SSLContext:
    ctx = client_context(test_ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0 signatures above 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


def test_tls10_only_server(mx_factory: MxFactory, test_ca: TestCA, good_cert: CertPair) -> None:
    mx = mx_factory(
        "127.0.0.2",
        cert=good_cert,
        tls_min=ssl.TLSVersion.TLSv1,
        tls_max=ssl.TLSVersion.TLSv1,
    )
    with connect(mx) as client:
        client.ehlo()
        modern = client_context(test_ca)
        assert modern.minimum_version == ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            client.starttls(context=modern)
    with connect(mx) as client:
        client.starttls(context=tls10_client(test_ca))
        assert client.sock.version() == "TLSv1"
        client.sendmail("a@sender.test", ["b@example.test"], b"old\r\n")
    assert mx.wait_for(1)[0].tls_version == "TLSv1"


def test_stalled_greeting_times_out_the_client(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.stall("connect", 30)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtplib.SMTP(mx.host, mx.port, timeout=0.2)


def test_wait_for_explains_a_timeout_and_reset_clears(mx_factory: MxFactory) -> None:
    mx = mx_factory("127.0.0.2")
    mx.script("rcpt", "550 5.1.1 No")
    with connect(mx) as client:
        client.sendmail("a@sender.test", ["b@example.test", "c@example.test"], b"x\r\n")
    assert len(mx.received) == 1
    mx.reset()
    assert (mx.received, mx.connections) == ([], 0)
    with pytest.raises(AssertionError, match=r"expected 1 message\(s\) .* got 0"):
        mx.wait_for(1, timeout=0.1)
