"""Issue 15: every message is checked for viruses and spam by real engines, through the
real `secumail serve` — Debian's clamd (with the harness's EICAR signature) and rspamd.

What a user would notice: EICAR as an attachment, in a zip and in a nested zip, and GTUBE
are refused — the sender gets a notice saying why, the recipient's MX gets nothing; a
clean message is delivered with the scan results in its metadata; a zip bomb and a MIME
nesting bomb are refused as over a limit; a scanner that stops makes messages wait (never
pass unscanned) until it is back, unless the account allows fail-open; with `scan.inline`
an infected message is refused at DATA (554 5.7.1) and by the API (422), never queued.
"""

from __future__ import annotations

import base64
import email
import io
import zipfile
from collections.abc import Callable

import pytest

from tests.e2e.api_client import Api, problem
from tests.e2e.world import Customer, GatewayProcess, World, make_message
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx
from tests.harness.scanners import EICAR, EICAR_SIGNATURE, GTUBE, Clamd, Rspamd
from tests.harness.server import wait_until as _wait_until


def wait_until(ready: Callable[[], bool], timeout: float) -> None:
    _wait_until(ready, timeout, lambda: "condition not reached", interval=0.3)

RCPT = "dr.jansen@clinic.test"


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def with_attachment(sender: str, data: bytes, name: str = "results.zip") -> bytes:
    head = make_message(sender, [RCPT], "Uitslagen").split(b"\r\n\r\n", 1)[0]
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        head
        + b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="sep"\r\n\r\n'
        + b"--sep\r\nContent-Type: text/plain\r\n\r\nZie bijlage.\r\n"
        + b"--sep\r\nContent-Type: application/octet-stream\r\n"
        + f'Content-Disposition: attachment; filename="{name}"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--sep--\r\n"
    )


def nesting_bomb(sender: str, depth: int) -> bytes:
    head = make_message(sender, [RCPT], "Nested").split(b"\r\n\r\n", 1)[0]
    body = b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for i in range(depth):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            + body + f"\r\n--b{i}--\r\n".encode()
        )
    return head + b"\r\nMIME-Version: 1.0\r\n" + body


@pytest.fixture
def clinic(world: World) -> HarnessMx:
    return world.domain("clinic.test")


@pytest.fixture
def scanning(make_gateway: Callable[..., GatewayProcess], clamd: Clamd, rspamd: Rspamd) -> GatewayProcess:
    return make_gateway(
        scan__clamd=clamd.socket_path, scan__rspamd=rspamd.url, scan__max_inflated_mib=20
    ).start()


@pytest.fixture
def sender(scanning: GatewayProcess, dns: AuthoritativeDns, sender_mx: HarnessMx) -> Customer:
    return scanning.onboard(dns, "Ziekenhuis", "hospital.test")


def scan_results(shown: dict) -> list[dict]:
    [event] = [e for e in shown["events"] if e["kind"] == "scanned"]
    return event["detail"]["results"]


def refused_with_notice(gw: GatewayProcess, qid: str, sender_mx: HarnessMx, expect: str) -> dict:
    shown = gw.wait_status(qid, {"rejected"})
    [rcpt] = shown["recipients"]
    assert expect in rcpt["reply"], rcpt
    notice = sender_mx.wait_for(1)[0]
    sender_mx.received.clear()
    text = email.message_from_bytes(notice.data).get_payload()[0].get_payload(decode=True).decode()
    assert expect in text, text
    return shown


@pytest.mark.parametrize(
    "attachment",
    [
        pytest.param(EICAR, id="bare"),
        pytest.param(zipped("eicar.com", EICAR), id="zip"),
        pytest.param(zipped("inner.zip", zipped("eicar.com", EICAR)), id="nested-zip"),
    ],
)
def test_a_virus_is_refused_and_never_delivered(
    scanning: GatewayProcess, sender: Customer, sender_mx: HarnessMx, clinic: HarnessMx, attachment: bytes
) -> None:
    qid = scanning.send(sender, [RCPT], body=with_attachment(f"alice@{sender.domain}", attachment))
    shown = refused_with_notice(scanning, qid, sender_mx, EICAR_SIGNATURE)
    assert shown["recipients"][0]["reply"].startswith("554 5.7.1 virus found")
    assert scan_results(shown) == [{"engine": "clamd", "verdict": "infected", "detail": EICAR_SIGNATURE}]
    # A clean message after it arrives; the infected one never did.
    clean = scanning.send(sender, [RCPT])
    scanning.wait_status(clean, {"delivered"})
    assert len(clinic.wait_for(1)) == 1
    assert all(b"eicar" not in m.data.lower() for m in clinic.received)


def test_spam_is_refused_with_the_score(
    scanning: GatewayProcess, sender: Customer, sender_mx: HarnessMx, clinic: HarnessMx
) -> None:
    body = make_message(f"alice@{sender.domain}", [RCPT], "Offer", f"{GTUBE}\r\n")
    qid = scanning.send(sender, [RCPT], body=body)
    shown = refused_with_notice(scanning, qid, sender_mx, "refused as spam")
    [clamd_result, rspamd_result] = scan_results(shown)
    assert clamd_result == {"engine": "clamd", "verdict": "clean"}
    assert rspamd_result["verdict"] == "spam" and "GTUBE" in rspamd_result["detail"]
    assert clinic.received == []


def test_a_clean_message_is_delivered_with_its_scan_results(
    scanning: GatewayProcess, sender: Customer, clinic: HarnessMx
) -> None:
    qid = scanning.send(sender, [RCPT])
    shown = scanning.wait_status(qid, {"delivered"})
    [clamd_result, rspamd_result] = scan_results(shown)
    assert clamd_result == {"engine": "clamd", "verdict": "clean"}
    assert rspamd_result["verdict"] == "clean" and rspamd_result["detail"].startswith("score ")
    assert clinic.wait_for(1)[0].rcpt_to == [RCPT]
    assert "messages are NOT scanned" not in scanning.log()
    assert "scanning with clamd and rspamd" in scanning.log()


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        pytest.param(
            lambda s: with_attachment(s, zipped("zeros.bin", bytes(64 * 1024 * 1024))),
            "inflate to more than 20 MiB",
            id="zip-bomb",
        ),
        pytest.param(lambda s: nesting_bomb(s, 60), "nested more than 20 levels", id="mime-nesting-bomb"),
    ],
)
def test_bombs_are_refused_as_over_a_limit(
    scanning: GatewayProcess, sender: Customer, sender_mx: HarnessMx, clinic: HarnessMx,
    make: Callable[[str], bytes], expect: str,
) -> None:
    qid = scanning.send(sender, [RCPT], body=make(f"alice@{sender.domain}"))
    shown = refused_with_notice(scanning, qid, sender_mx, expect)
    assert shown["recipients"][0]["enhanced"] == "5.6.0"
    assert scan_results(shown)[0]["verdict"] == "over_limit"
    assert clinic.received == []


@pytest.mark.parametrize("engine", ["clamd", "rspamd"])
def test_a_scanner_that_stops_makes_messages_wait_until_it_is_back(
    make_gateway: Callable[..., GatewayProcess], dns: AuthoritativeDns, sender_mx: HarnessMx,
    clinic: HarnessMx, engine: str,
) -> None:
    with Clamd() as own_clamd, Rspamd() as own_rspamd:
        gw = make_gateway(
            scan__clamd=own_clamd.socket_path, scan__rspamd=own_rspamd.url, scan__retry_after=1
        ).start()
        customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
        first = gw.send(customer, [RCPT])
        gw.wait_status(first, {"delivered"})
        down = own_clamd if engine == "clamd" else own_rspamd
        down.halt()
        qid = gw.send(customer, [RCPT])  # accepted: the queue holds it safely meanwhile
        wait_until(lambda: gw.cli("queue")["scanner_unavailable"].get(engine, 0) >= 1, 20)
        shown = gw.message(qid)
        assert [r["status"] for r in shown["recipients"]] == ["queued"]
        assert len(clinic.received) == 1, "nothing passes unscanned"
        down.resume()
        gw.wait_status(qid, {"delivered"}, timeout=30)
        assert len(clinic.wait_for(2)) == 2
        assert "scanner unavailable" in gw.log()


def test_fail_open_account_passes_marked_unscanned(
    make_gateway: Callable[..., GatewayProcess], dns: AuthoritativeDns, sender_mx: HarnessMx,
    clinic: HarnessMx, tmp_path,
) -> None:
    gw = make_gateway(scan__clamd=str(tmp_path / "no-clamd.sock"), scan__retry_after=1).start()
    customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    gw.cli("account", "update", "Ziekenhuis", "--scan-fail-open", "on")
    qid = gw.send(customer, [RCPT])
    shown = gw.wait_status(qid, {"delivered"})
    [skipped] = [e for e in shown["events"] if e["kind"] == "scan_skipped"]
    assert skipped["detail"]["engine"] == "clamd"
    assert not [e for e in shown["events"] if e["kind"] == "scanned"]


def test_inline_refuses_at_data_and_in_the_api(
    make_gateway: Callable[..., GatewayProcess], dns: AuthoritativeDns, sender_mx: HarnessMx,
    clinic: HarnessMx, clamd: Clamd,
) -> None:
    gw = make_gateway(scan__clamd=clamd.socket_path, scan__inline=True).start()
    customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    sender = f"alice@{customer.domain}"
    with gw.smtp(login=customer) as client:
        client.mail(sender)
        client.rcpt(RCPT)
        code, text = client.data(with_attachment(sender, zipped("eicar.com", EICAR)))
    assert code == 554 and text.startswith(b"5.7.1 ") and EICAR_SIGNATURE.encode() in text
    api = Api(gw).login("Ziekenhuis", "messages:send")
    r = api.post("/v1/messages", content=with_attachment(sender, EICAR), headers={"Content-Type": "message/rfc822"})
    assert EICAR_SIGNATURE in problem(r, 422)["detail"]
    # A clean one is scanned once, at acceptance, and delivered.
    qid = gw.send(customer, [RCPT])
    shown = gw.wait_status(qid, {"delivered"})
    assert scan_results(shown) == [{"engine": "clamd", "verdict": "clean"}]
    assert len(clinic.wait_for(1)) == 1
    assert sender_mx.received == []
