"""docs/quickstart.md, run as written: its shell blocks in bash, against a fresh gateway on
the fake internet, with swaks, curl and jq. Only what a reader fills in from earlier
output (the printed credentials and message id) and what differs on a test machine (ports,
where the config lives, `make run` itself) is swapped in; the domains are the document's
own, served by the harness DNS on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.world import GatewayProcess, World
from tests.harness.dns import AuthoritativeDns

DOC = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def sh_blocks(heading: str) -> list[str]:
    """The ```sh blocks of the section whose heading starts with `heading`."""
    sections = re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    (section,) = [s for s in sections if s.startswith(heading)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


class Reader:
    """Runs blocks as a reader in the second terminal does, after the `export` line."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        (_make_run, export) = sh_blocks("1.")
        venv = str(Path(sys.executable).parent)
        self.prefix = export.replace('"$PWD/.venv/bin:$PATH"', f'"{venv}:$PATH"').replace(
            '"$PWD/var/secumail.toml"', f'"{gw.config}"'
        )
        assert self.prefix != export, "the export line changed: update this test"

    def run(self, script: str, **fill: str) -> str:
        script = script.replace("localhost:587", f"localhost:{self.gw.submission_port}").replace(
            "localhost:8443", f"localhost:{self.gw.api_port}"
        )
        for old, new in fill.items():
            assert old in script, f"{old!r} is no longer in the document"
            script = script.replace(old, new)
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + self.prefix + script],
            cwd=self.gw.workdir,  # var/tls/gateway.crt is here, as in the repository
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.gw.workdir)},
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done.stdout


def test_the_quickstart_works_as_written(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(server__hostname="localhost").start()  # what `make run` starts
    gw._wait_listening(gw.api_port)
    notices = world.domain("zho.nl")
    kliniek = world.domain("kliniek.nl")
    reader = Reader(gw)

    # 2. the organisation and its domain; the reader publishes what `domain add` printed
    add, verify = sh_blocks("2.")
    printed = reader.run(add)
    assert "_secumail.zho.nl" in printed
    for record in gw.cli("domain", "records", "zho.nl")["records"]:
        if record["required"]:
            dns.add(record["name"], "TXT", record["zone"].split(" TXT ", 1)[1])
    assert "✓" in reader.run(verify)

    # 3. preflight
    (check,) = sh_blocks("3.")
    assert "dr.jansen@kliniek.nl: ✓ secure (verified)" in reader.run(check)

    # 4. by SMTP, with swaks; then the message and its evidence
    create, send, show, evidence = sh_blocks("4.")
    printed = reader.run(create)
    user = re.search(r"username:\s+(\S+)", printed).group(1)
    password = re.search(r"password:\s+(\S+)", printed).group(1)
    sent = reader.run(
        send,
        **{"SMTP_USER=ziekenhuis-oost-1a2b3c4d SMTP_PASSWORD=…":
           f"SMTP_USER={user} SMTP_PASSWORD='{password}'"},
    )
    message_id = re.search(r"250 2\.0\.0 Ok: queued as (\S+)", sent).group(1)
    gw.wait_status(message_id, {"delivered"})
    (got,) = kliniek.wait_for(1)
    assert got.rcpt_to == ["dr.jansen@kliniek.nl"] and b"de uitslag volgt" in got.data
    assert "delivered" in reader.run(show, **{"ID=06H…": f"ID={message_id}"})
    verified = reader.run(f"ID={message_id}\n" + evidence)  # the same terminal: ID is set
    assert "✓ dr.jansen@kliniek.nl: signature valid" in verified, verified

    # 5. by the REST API, with curl and jq
    create, send = sh_blocks("5.")
    printed = reader.run(create)
    client_id = re.search(r"client_id:\s+(\S+)", printed).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", printed).group(1)
    answer = json.loads(
        reader.run(
            send,
            **{"CLIENT_ID=api-ziekenhuis-oost-1a2b3c4d CLIENT_SECRET=…":
               f"CLIENT_ID={client_id} CLIENT_SECRET='{secret}'"},
        )
    )
    assert [(r["address"], r["status"]) for r in answer["recipients"]] == [
        ("dr.jansen@kliniek.nl", "queued")
    ]
    gw.wait_status(answer["id"], {"delivered"})
    assert len(kliniek.wait_for(2)) == 2
    assert notices.received == [], "nothing went wrong: no notice to the sender"
