"""The scanner clients (net/clamd.py, net/rspamd.py) against the real engines: Debian's
clamd with an EICAR signature database built by the harness, and rspamd with Debian's
rules. What a user would notice: EICAR found bare, zipped and in a nested zip; GTUBE is
spam; a clean message is clean; a message over a scanner's limits is never clean; a
scanner that is down is `ScannerUnavailable` (the message waits), never "clean"."""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest

from secumail.errors import ScannerUnavailable
from secumail.mail.scan_result import ScanResult, ScanVerdict
from secumail.net.clamd import ClamdClient
from secumail.net.rspamd import RspamdClient, SpamContext
from tests.harness import free_port
from tests.harness.scanners import EICAR, EICAR_SIGNATURE, GTUBE, Clamd, Rspamd


def zipped(name: str, data: bytes, *, level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        z.writestr(name, data)
    return buf.getvalue()


def mail(body: bytes, *, attachment: bytes | None = None) -> bytes:
    import base64

    head = (
        b"From: alice@hospital.test\r\nTo: bob@clinic.test\r\nSubject: results\r\n"
        b"Message-ID: <m1@hospital.test>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
    )
    if attachment is None:
        return head + b"\r\n" + body
    b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        head
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"--b\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n"
        + b'--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename="x.zip"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n"
    )


def scan(client: ClamdClient, data: bytes) -> ScanResult:
    return asyncio.run(client.scan(data))


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_eicar_is_found_bare_zipped_and_nested(clamd: Clamd, over: str) -> None:
    client = ClamdClient(clamd.socket_path if over == "unix" else clamd.tcp_address, timeout=30)
    for attachment in (EICAR, zipped("eicar.com", EICAR), zipped("inner.zip", zipped("eicar.com", EICAR))):
        result = scan(client, mail(b"see attachment", attachment=attachment))
        assert (result.verdict, result.detail) == (ScanVerdict.INFECTED, EICAR_SIGNATURE)
    clean = scan(client, mail(b"Dear Mrs. Jansen, your results are in."))
    assert clean.verdict is ScanVerdict.CLEAN and not clean.refused


def test_deeper_than_clamds_recursion_limit_is_never_clean(clamd: Clamd) -> None:
    data = b"harmless"
    for i in range(clamd.max_recursion + 3):
        data = zipped(f"layer{i}", data)
    result = scan(ClamdClient(clamd.socket_path, timeout=30), mail(b"x", attachment=data))
    assert result.verdict is ScanVerdict.OVER_LIMIT
    assert result.detail.startswith("Heuristics.Limits.Exceeded")


def test_a_zip_bomb_is_never_clean(clamd: Clamd) -> None:
    bomb = zipped("zeros.bin", bytes(64 * 1024 * 1024), level=9)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 200_000
    result = scan(ClamdClient(clamd.socket_path, timeout=60), mail(b"x", attachment=bomb))
    assert result.verdict is ScanVerdict.OVER_LIMIT


def test_clamd_down_is_unavailable_not_clean(tmp_path) -> None:
    for address in (str(tmp_path / "no.sock"), f"127.0.0.1:{free_port()}"):
        with pytest.raises(ScannerUnavailable) as err:
            scan(ClamdClient(address, timeout=5), mail(b"hello"))
        assert err.value.engine == "clamd"


def test_clamd_stopped_mid_run() -> None:
    with Clamd() as own:
        client = ClamdClient(own.socket_path, timeout=10)
        assert scan(client, mail(b"hello")).verdict is ScanVerdict.CLEAN
        own.stop()
        with pytest.raises(ScannerUnavailable):
            scan(client, mail(b"hello"))


def test_gtube_is_spam_and_a_normal_message_is_not(rspamd: Rspamd) -> None:
    async def go() -> None:
        client = RspamdClient(rspamd.url, timeout=30, reject_score=None)
        try:
            context = SpamContext("q1", "192.0.2.10", "mail.hospital.test", "alice@hospital.test", ["bob@clinic.test"])
            spam = await client.scan(mail(GTUBE.encode() + b"\r\n"), context)
            assert spam.verdict is ScanVerdict.SPAM and spam.refused
            assert "GTUBE" in spam.detail and spam.score is not None and spam.score >= 15
            clean = await client.scan(mail(b"Dear Mrs. Jansen, your results are in."), context)
            assert clean.verdict is ScanVerdict.CLEAN and clean.score is not None and clean.score < 15
            # An operator's own threshold, below what the normal message scores.
            strict = RspamdClient(rspamd.url, timeout=30, reject_score=-100.0)
            try:
                assert (await strict.scan(mail(b"hello"), context)).verdict is ScanVerdict.SPAM
            finally:
                await strict.close()
        finally:
            await client.close()

    asyncio.run(go())


def test_rspamd_down_is_unavailable_not_clean() -> None:
    async def go() -> None:
        client = RspamdClient(f"http://127.0.0.1:{free_port()}", timeout=5, reject_score=None)
        try:
            with pytest.raises(ScannerUnavailable) as err:
                await client.scan(mail(b"hello"))
            assert err.value.engine == "rspamd"
        finally:
            await client.close()

    asyncio.run(go())
