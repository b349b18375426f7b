"""docs/api.md works as written: its shell blocks, run with bash, curl and jq against a
gateway as `make run` leaves it (self-signed certificate for `localhost` in var/tls/).

Only what differs between the doc's world and the test's is replaced: the API port, the
config file's path, the customer's domains (zho.nl, kliniek.nl → harness domains), and the
client id, secret and message id that earlier steps printed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.world import GatewayProcess, World
from tests.harness.dns import AuthoritativeDns

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_documented_tools_are_installed() -> None:
    # `make test` installs them (scripts/ensure-system-deps): never a silent skip.
    assert shutil.which("curl") and shutil.which("jq") and shutil.which("bash")


def sh_blocks(heading: str) -> list[str]:
    """The ```sh blocks of the section whose heading starts with `heading`."""
    sections = re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    (section,) = [s for s in sections if s.startswith(heading)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def run(script: str, gw: GatewayProcess, **replace: str) -> str:
    script = (
        script.replace("localhost:8443", f"localhost:{gw.api_port}")
        .replace("var/secumail.toml", str(gw.config))
        .replace("zho.nl", "hospital.test")
        .replace("kliniek.nl", "clinic.test")
    )
    for old, new in replace.items():
        assert old in script, old
        script = script.replace(old, new)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=gw.workdir,  # where var/tls/gateway.crt is, as in the repository after `make run`
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(gw.workdir)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


def json_values(text: str) -> list:
    """Every JSON value curl and jq printed, one after another (curl adds no newline)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def test_the_documented_commands_work_against_a_fresh_gateway(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(server__hostname="localhost").start()
    gw._wait_listening(gw.api_port)
    world.domain("hospital.test")
    mx = world.domain("clinic.test")
    gw.onboard(dns, "Ziekenhuis Oost", "hospital.test")

    (create,) = sh_blocks("1.")
    printed = run(create, gw)
    client_id = re.search(r"client_id:\s+(\S+)", printed).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", printed).group(1)
    creds = {"api-ziekenhuis-oost-1a2b3c4d": client_id, "CLIENT_SECRET=…": f"CLIENT_SECRET={secret}"}

    (token,) = sh_blocks("2.")
    assert "eyJ" in run(token, gw, **creds)

    (check,) = sh_blocks("3.")
    (answer,) = json_values(run(token + check, gw, **creds).split("\n", 1)[1])
    assert (answer["address"], answer["secure"], answer["method"]) == (
        "dr.jansen@clinic.test", True, "verified",
    ), answer

    (send,) = sh_blocks("4.")
    (accepted,) = json_values(run(token + send, gw, **creds).split("\n", 1)[1])
    message_id = accepted["id"]
    assert [r["address"] for r in accepted["recipients"]] == ["dr.jansen@clinic.test"]
    assert mx.wait_for(1)[0].rcpt_to == ["dr.jansen@clinic.test"]
    gw.wait_status(message_id, {"delivered"})

    (status,) = sh_blocks("5.")
    shown = run(token + status, gw, **creds, **{"ID=06H1…": f"ID={message_id}"})
    recipients, attempts, page, evidence = json_values(shown.split("\n", 1)[1])
    assert [(r["address"], r["status"]) for r in recipients] == [
        ("dr.jansen@clinic.test", "delivered")
    ]
    assert attempts[0]["mx"] == "mx10.clinic.test" and attempts[0]["tls_version"]
    assert page == {"items": [], "next_cursor": None}  # nothing refused_insecure
    assert evidence["record"]["recipient"] == "dr.jansen@clinic.test" and evidence["token"]

    dns.add("portal.hospital.test", "A", "127.0.0.1")  # the webhook target must resolve
    (hook,) = sh_blocks("Webhooks")
    (made,) = json_values(run(token + hook, gw, **creds).split("\n", 1)[1])
    assert made["url"] == "https://portal.hospital.test/secumail-events" and made["secret"]


def test_without_the_ca_file_the_error_is_shown_not_swallowed(make_gateway) -> None:
    gw = make_gateway(server__hostname="localhost").start()
    gw._wait_listening(gw.api_port)
    (token,) = sh_blocks("2.")
    script = "set +e\n" + token.replace(" --cacert var/tls/gateway.crt", "")
    done = subprocess.run(
        ["bash", "-c", script.replace("localhost:8443", f"localhost:{gw.api_port}")],
        cwd=gw.workdir, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(gw.workdir)},
    )
    assert "SSL certificate problem" in done.stderr, done.stderr  # -sS: errors still shown
