"""No trace: message content never lands in the database, the spool or a log, whatever
becomes of the message (issue 11, "privacy by design").

Each path gets messages with markers of its own in the subject, the body and a header;
when everything has settled (delivered, refused_insecure, bounced, deferred then expired,
refused at the door, with their notices), every file the gateway wrote is searched for
them, byte for byte: the SQLite database with its WAL, the spool, keys, and the log.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from tests.e2e.api_client import Api
from tests.e2e.world import GatewayProcess, World, make_message
from tests.harness.dns import AuthoritativeDns


def _marked(path: str, markers: list[str]) -> tuple[str, str]:
    """(subject, body text) carrying fresh markers for `path`."""
    subject, line, header = (f"NOTRACE{part}{secrets.token_hex(6)}" for part in "SBH")
    markers.extend([subject, line, header])
    return subject, f"Dear patient,\r\n{line} ({path})\r\nRegards\r\n", header


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_content_anywhere_after_every_path(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw: GatewayProcess = make_gateway(delivery__max_age=4.0, notify__delay_warning_after=1.0)
    gw.start()
    sender_mx = world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    good = world.domain("clinic.test")
    world.domain("plain.test", "no_starttls")
    strict = world.domain("strict.test")
    strict.script_rcpt("gone@strict.test", "550 5.1.1 No such user here")
    slow = world.domain("slow.test")
    slow.script("rcpt", *["451 4.3.0 Try again later"] * 50)
    markers: list[str] = []

    def smtp_message(path: str, to: str, *, extra: bytes = b"") -> bytes:
        subject, text, header = _marked(path, markers)
        message = make_message("alice@hospital.test", [to], subject, text)
        return extra + f"X-Case-Ref: {header}\r\n".encode() + message

    final = {
        "delivered": ("x@clinic.test", {"delivered"}),
        "refused_insecure": ("x@plain.test", {"refused_insecure"}),
        "bounced": ("gone@strict.test", {"bounced"}),
        "expired": ("x@slow.test", {"expired"}),
    }
    sent: dict[str, str] = {}
    for path, (to, _) in final.items():
        sent[path] = gw.send(who, [to], body=smtp_message(path, to))

    api = Api(gw).login("Ziekenhuis")
    subject, text, header = _marked("api-json", markers)
    attachment = base64.b64encode(f"attached {header}".encode()).decode()
    r = api.post(
        "/v1/messages",
        json={
            "from": "alice@hospital.test",
            "to": ["y@clinic.test"],
            "subject": subject,
            "text": text,
            "headers": {"X-Case-Ref": header},
            "attachments": [{"filename": "brief.txt", "content": attachment}],
        },
    )
    assert r.status_code == 202, r.text
    sent["api-json"] = r.json()["id"]
    raw = smtp_message("api-raw", "z@clinic.test")
    r = api.post("/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"})
    assert r.status_code == 202, r.text
    sent["api-raw"] = r.json()["id"]

    # Refused at the door (a mail loop): the content was read, then dropped.
    loop = b"Received: from a.test by b.test; Thu, 26 Nov 2026 12:00:00 +0000\r\n" * 51
    with gw.smtp(login=who) as client:
        client.mail("alice@hospital.test")
        client.rcpt("x@clinic.test")
        code, _ = client.data(smtp_message("refused-at-door", "x@clinic.test", extra=loop))
    assert code == 554

    for path, (_to, wanted) in final.items():
        gw.wait_status(sent[path], wanted, timeout=40)
    for path in ("api-json", "api-raw"):
        gw.wait_status(sent[path], {"delivered"})
    assert len(good.wait_for(3)) == 3
    # Notices: refused_insecure, bounced, delayed and expired.
    notices = sender_mx.wait_for(4, timeout=30)
    for notice in notices:
        assert not any(m.encode() in notice.data for m in markers), "a notice copied content"
    # The messages really carried their markers: the search below can find them.
    assert any(markers[1].encode() in m.data for m in good.received)
    assert gw.stop() == 0

    files = _files(gw.workdir)
    assert any(p.suffix in (".db", ".sqlite") or "db" in p.name for p in files), files
    assert gw.log_file in files and gw.log_file.stat().st_size > 0
    hits = []
    for p in files:
        if p.name == gw.config.name:
            continue
        data = p.read_bytes()
        for marker in markers:
            forms = {marker.encode(), marker.lower().encode(), marker.encode("utf-16-le")}
            if any(form in data for form in forms):
                hits.append((p.relative_to(gw.workdir), marker))
    assert hits == []
