"""What an operator relies on: nothing accepted is lost, nothing private is left behind."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.e2e.raw_smtp import RawSmtp, open_session
from tests.e2e.world import Customer, GatewayProcess, World, make_message
from tests.harness.dns import AuthoritativeDns


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_kill_9_after_250_loses_nothing_and_delivers_once(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    mx.stall("connect", 30)  # the first delivery hangs in the greeting
    qid = gateway.send(customer, ["x@clinic.test"])
    deadline = time.monotonic() + 10
    while mx.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mx.connections == 1, "delivery had started"
    gateway.kill9()
    mx.stall("connect", 0)
    gateway.start()
    got = mx.wait_for(1, timeout=20)
    shown = gateway.wait_status(qid, {"delivered"})
    assert len(got) == 1
    assert shown["recipients"][0]["status"] == "delivered"
    time.sleep(1.0)
    assert len(mx.received) == 1, "delivered exactly once"


def test_kill_9_before_any_stage_ran_loses_nothing(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway().start("submission")
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    ids = [gw.send(who, [f"p{i}@clinic.test"]) for i in range(3)]
    gw.kill9()
    gw.start()
    assert len(mx.wait_for(3)) == 3
    for qid in ids:
        gw.wait_status(qid, {"delivered"})


def test_no_plaintext_under_data_dir_while_queued_or_after_delivery(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    mx.script("rcpt", "451 4.3.0 later")  # keeps the message queued for a moment
    body_marker = b"BSN-123456782-diagnosis-XYZZY"
    subject_marker = "Subject-Marker-Q7W8"
    body = make_message(
        "alice@hospital.test", ["x@clinic.test"], subject_marker,
        text=f"Patient file\r\n{body_marker.decode()}\r\n",
    )
    qid = gateway.send(customer, ["x@clinic.test"], body=body)
    gateway.wait_status(qid, {"deferred"})
    for marker in (body_marker, subject_marker.encode()):
        assert _files_containing(gateway.data_dir, marker) == [], "queued: only ciphertext on disk"
    got = mx.wait_for(1)
    assert body_marker in got[0].data
    gateway.wait_status(qid, {"delivered"})
    gateway.stop()
    for marker in (body_marker, subject_marker.encode()):
        assert _files_containing(gateway.data_dir, marker) == []
        assert marker not in gateway.log().encode(), "no content in logs"
    db = sqlite3.connect(gateway.data_dir / "secumail.sqlite")
    assert db.execute("SELECT COUNT(*) FROM spool_bodies").fetchone()[0] == 0, "body destroyed"
    assert db.execute("SELECT COUNT(*) FROM spool_keys").fetchone()[0] == 0, "data key destroyed"
    assert db.execute("SELECT subject FROM messages WHERE id = ?", (qid,)).fetchone()[0] is None


def test_admission_control_answers_451_when_the_intake_is_full(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(bus__queue_bound=2).start("submission")  # no stage drains the queue
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    accepted = [gw.send(who, ["a@clinic.test"]), gw.send(who, ["b@clinic.test"])]
    s = open_session(gw, who)
    code, text = s.cmd("MAIL FROM:<alice@hospital.test>")
    assert (code, text[:5]) == (451, "4.3.2")
    # A client that pipelined RCPT and DATA after MAIL gets 503 for them; being told
    # "busy" again and again must not end its connection (max_errors is 10).
    for _ in range(8):
        assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 451
        assert s.cmd("RCPT TO:<a@clinic.test>") == (503, "5.5.1 Need MAIL before RCPT")
        assert s.cmd("DATA")[0] == 503
    assert s.cmd("NOOP")[0] == 250, "still connected"
    # Out-of-sequence commands without such a refusal are still the client's errors.
    s.cmd("RSET")
    assert [s.cmd("RCPT TO:<a@clinic.test>")[0] for _ in range(10)] == [503] * 10
    assert s.reply()[0] == 421, "too many errors: the gateway says goodbye"
    gw.stop()
    gw.start()  # all roles: the queue drains; the two accepted messages arrive
    assert len(mx.wait_for(2)) == 2
    for qid in accepted:
        gw.wait_status(qid, {"delivered"})


def test_sigterm_stops_cleanly(gateway: GatewayProcess, customer: Customer) -> None:
    assert gateway.stop() == 0
    assert "stopped" in gateway.log()


def test_swaks_submits_over_starttls_with_auth(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is installed by `make test` (scripts/ensure-system-deps)"
    mx = world.domain("clinic.test")
    out = subprocess.run(
        [
            swaks, "--server", "127.0.0.1", "--port", str(gateway.submission_port),
            "--tls", "--auth", "PLAIN", "--auth-user", customer.username,
            "--auth-password", customer.password,
            "--from", "alice@hospital.test", "--to", "swaks@clinic.test",
            "--header", "From: alice@hospital.test", "--header", "Subject: via swaks",
            "--body", "sent by swaks",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as" in out.stdout
    got = mx.wait_for(1)[0]
    assert got.rcpt_to == ["swaks@clinic.test"]
    assert b"sent by swaks" in got.data


def test_cli_executable_prints_json(gateway: GatewayProcess) -> None:
    out = gateway.cli_process("queue", "--json")
    assert out.returncode == 0, out.stderr
    assert '"route": 0' in out.stdout


def test_two_worker_processes_share_the_port_and_the_queue(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(server__workers=2).start()
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    assert gw.proc is not None
    children = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, "one more worker process"
    ids = [gw.send(who, [f"w{i}@clinic.test"]) for i in range(12)]
    got = mx.wait_for(12, timeout=30)
    for qid in ids:
        gw.wait_status(qid, {"delivered"})
    time.sleep(1.0)
    assert len(mx.received) == 12 == len({tuple(m.rcpt_to) for m in got}), "each delivered exactly once"
    # A worker per core signs on its own event loop (no signing thread): signed all the same.
    assert all(m.data.count(b"DKIM-Signature:") == 2 for m in got)
    accepted = [line for line in gw.log().splitlines() if 'msg="accepted ' in line]
    # The first worker accepts every connection and hands out every other one: 6 + 6
    # (the kernel's SO_REUSEPORT hash would split them unevenly most of the time).
    assert len(accepted) == 12
    assert sum("worker=1" in line for line in accepted) == 6, "connections dealt in turn"
    # Implicit TLS (465) too: the worker that gets the connection does the handshake.
    for _ in range(2):
        s = RawSmtp(gw.tls_port, implicit_tls=True, ctx=gw.client_context())
        assert s.reply()[0] == 220
        s.cmd("EHLO client.test")
        assert s.login(who)[0] == 235
        assert s.cmd("NOOP")[0] == 250
        s.close()
    assert gw.stop() == 0
    deadline = time.monotonic() + 10
    while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{children[0]}").exists(), "the second worker stopped too"


def test_a_machine_named_localhost_still_starts_and_relays(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    # `make run` on a fresh machine: server.hostname defaults to the FQDN, which is often
    # just "localhost" — not a domain the gateway can sign its notices with.
    gw = make_gateway(server__hostname="localhost")
    out = gw.cli("init")
    assert out["gateway_dkim"] == []
    assert "not a domain name" in gw.cli_process("init").stdout
    gw.start()
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    qid = gw.send(who, ["bob@clinic.test"])
    assert mx.wait_for(1)[0].rcpt_to == ["bob@clinic.test"]
    gw.wait_status(qid, {"delivered"})
    assert "not a domain name" in gw.log()
