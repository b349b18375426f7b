"""Issue 15: stages as plug-ins. The example plug-in (examples/bsn-guard) is installed with
pip, named in `pipeline.stages`, and runs in the real `secumail serve`: a message with a
BSN is not sent outside the organisation (the sender is told why, without the number),
internal recipients still get it, a number that fails the eleven-test is not a BSN, and an
account the operator allows may send BSNs out."""

from __future__ import annotations

import email
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.world import Customer, GatewayProcess, World, make_message
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "bsn-guard"
STAGES = ["route", "scan", "bsn_guard", "sign", "deliver", "notify"]
BSN = "1112.22.333"  # passes the eleven-test
NOT_A_BSN = "1234.56.789"  # fails it


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """`pip install examples/bsn-guard`, as an operator would."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(PLUGIN)],
        check=True,
    )


@pytest.fixture
def clinic(world: World) -> HarnessMx:
    return world.domain("clinic.test")


@pytest.fixture
def guarded(make_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return make_gateway(pipeline__stages=STAGES, plugins__bsn_guard={"allowed_accounts": ["GGD"]}).start()


@pytest.fixture
def hospital(guarded: GatewayProcess, dns: AuthoritativeDns, sender_mx: HarnessMx) -> Customer:
    return guarded.onboard(dns, "Ziekenhuis", "hospital.test")


def test_a_bsn_stays_inside_the_organisation(
    guarded: GatewayProcess, hospital: Customer, sender_mx: HarnessMx, clinic: HarnessMx
) -> None:
    sender = f"alice@{hospital.domain}"
    colleague = f"bob@{hospital.domain}"
    body = make_message(sender, ["dr@clinic.test", colleague], "Patient", f"BSN {BSN}\r\n")
    qid = guarded.send(hospital, ["dr@clinic.test", colleague], body=body)
    shown = guarded.wait_status(qid, {"rejected", "delivered"})
    status = {r["address"]: (r["status"], r["reply"]) for r in shown["recipients"]}
    assert status[colleague][0] == "delivered"
    assert status["dr@clinic.test"][0] == "rejected"
    assert "citizen service number (BSN)" in status["dr@clinic.test"][1]
    assert clinic.received == [], "nothing left the organisation"
    # The colleague's copy went to the hospital's own MX, with the notice for the refusal.
    got = sender_mx.wait_for(2)
    notice = next(m for m in got if m.mail_from == "")
    text = email.message_from_bytes(notice.data).get_payload()[0].get_payload(decode=True).decode()
    assert "dr@clinic.test" in text and "BSN" in text
    # The number itself is written nowhere: not in the metadata, not in the log.
    assert BSN not in str(shown) and BSN.replace(".", "") not in str(shown)
    assert BSN not in guarded.log() and BSN.replace(".", "") not in guarded.log()


def test_numbers_that_fail_the_eleven_test_pass(
    guarded: GatewayProcess, hospital: Customer, clinic: HarnessMx
) -> None:
    body = make_message(f"alice@{hospital.domain}", ["dr@clinic.test"], "Order", f"order {NOT_A_BSN}\r\n")
    qid = guarded.send(hospital, ["dr@clinic.test"], body=body)
    shown = guarded.wait_status(qid, {"delivered"})
    assert [e["detail"] for e in shown["events"] if e["kind"] == "bsn_checked"] == [{"found": False}]
    assert len(clinic.wait_for(1)) == 1


def test_an_allowed_account_may_send_bsns_out(
    guarded: GatewayProcess, dns: AuthoritativeDns, world: World, clinic: HarnessMx
) -> None:
    world.domain("ggd.test")
    ggd = guarded.onboard(dns, "GGD", "ggd.test")
    body = make_message(f"arts@{ggd.domain}", ["dr@clinic.test"], "Melding", f"BSN {BSN}\r\n")
    qid = guarded.send(ggd, ["dr@clinic.test"], body=body)
    guarded.wait_status(qid, {"delivered"})
    assert len(clinic.wait_for(1)) == 1


def test_all_recipients_external_rejects_the_message(
    guarded: GatewayProcess, hospital: Customer, sender_mx: HarnessMx, clinic: HarnessMx
) -> None:
    body = make_message(f"alice@{hospital.domain}", ["dr@clinic.test"], "Patient", f"BSN {BSN}\r\n")
    qid = guarded.send(hospital, ["dr@clinic.test"], body=body)
    shown = guarded.wait_status(qid, {"rejected"})
    assert shown["finished_at"] is not None
    assert len(sender_mx.wait_for(1)) == 1  # the notice
    assert clinic.received == []
