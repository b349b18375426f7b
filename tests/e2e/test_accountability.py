"""Accountability (issue 11): the audit log and the GDPR duties, through the real
`secumail` command and API — what an operator and a data-protection officer see."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.e2e.api_client import Api, problem
from tests.e2e.raw_smtp import open_session
from tests.e2e.world import Customer, GatewayProcess, World

PERSON = "bob@clinic.test"


def db_path(gw: GatewayProcess) -> Path:
    return gw.data_dir / "secumail.sqlite"


def write_db(gw: GatewayProcess, *statements: tuple[str, tuple]) -> None:
    """Change the database file behind Secumail's back (the audit triggers dropped first,
    as someone with write access to the file would)."""
    conn = sqlite3.connect(db_path(gw), timeout=10)
    try:
        for sql, args in statements:
            conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def raw_db_bytes(gw: GatewayProcess) -> bytes:
    path = db_path(gw)
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return data.lower()


def delivered_to(gw: GatewayProcess, customer: Customer, to: str) -> str:
    qid = gw.send(customer, [to])
    gw.wait_status(qid, {"delivered"})
    return qid


def test_audit_verify_names_the_tampered_entry(make_gateway) -> None:
    gw = make_gateway()
    gw.cli("account", "create", "Ziekenhuis")
    gw.cli("account", "update", "Ziekenhuis", "--retention-days", "60")
    gw.cli("credential", "create", "Ziekenhuis")
    entries = gw.cli("audit", "list")
    assert [e["kind"] for e in entries] == [
        "keys_created",
        "account_created",
        "account_updated",
        "credential_created",
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert entries[2]["detail"] == {"retention_days": 60}
    ok = gw.cli_process("audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact: 4 entries" in ok.stdout

    write_db(
        gw,
        ("DROP TRIGGER audit_log_only_erase", ()),
        ("UPDATE audit_log SET detail = ? WHERE seq = 3", ('{"retention_days": 3650}',)),
    )
    broken = gw.cli_process("audit", "verify")
    assert broken.returncode == 1
    assert "broken at entry 3" in broken.stdout and "altered" in broken.stdout
    assert gw.cli("audit", "verify", check=False)["broken_seq"] == 3


def test_deleting_the_newest_entries_is_noticed(make_gateway) -> None:
    gw = make_gateway()
    gw.cli("account", "create", "Ziekenhuis")
    gw.cli("credential", "create", "Ziekenhuis")
    head = gw.cli("audit", "verify")["head"]
    write_db(
        gw,
        ("DROP TRIGGER audit_log_no_delete", ()),
        ("DELETE FROM audit_log WHERE seq = ?", (head["seq"],)),
    )
    report = gw.cli("audit", "verify", check=False)
    assert not report["intact"] and report["broken_seq"] == head["seq"]
    assert "deleted" in report["reason"]


def test_refused_logins_are_in_the_audit_log(gateway: GatewayProcess, customer: Customer) -> None:
    s = open_session(gateway)
    wrong = Customer(customer.account_id, customer.name, customer.domain, customer.username, "nope")
    assert s.login(wrong)[0] == 535
    api = Api(gateway)
    client_id, _secret = api.credential("Ziekenhuis")
    r = api.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")
    )
    assert r.status_code == 401
    assert api.get("/v1/domains", headers={"Authorization": "Bearer not.a.token"}).status_code == 401

    refused = gateway.cli("audit", "list", "--kind", "login_refused", "--since", "1h")
    smtp = [e for e in refused if e["actor"] == "smtp:127.0.0.1"]
    assert [(e["subject"], e["detail"]["reason"], e["detail"]["now_throttled"]) for e in smtp] == [
        (customer.username, "wrong password", False)
    ]
    api_refusals = {e["subject"]: e for e in refused if e["actor"] == "api:127.0.0.1"}
    assert set(api_refusals) == {client_id, "bearer-token"}
    assert gateway.cli("audit", "verify")["intact"]


def test_the_failure_that_closes_the_throttle_says_so(
    make_gateway, dns, world: World, sender_mx
) -> None:
    gw = make_gateway(submission__auth_failure_limit=2).start()
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    s = open_session(gw)
    wrong = Customer(who.account_id, who.name, who.domain, who.username, "nope")
    assert [s.login(wrong)[0] for _ in range(3)] == [535, 535, 454]
    refused = gw.cli("audit", "list", "--kind", "login_refused")
    assert [e["detail"]["now_throttled"] for e in refused] == [False, True]


def test_gdpr_export_erase_and_purge_through_the_cli(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    world.domain("clinic.test")
    gateway.cli("account", "update", "Ziekenhuis", "--notify", PERSON)
    first = delivered_to(gateway, customer, PERSON)
    gateway.cli("evidence", "export", first, "--recipient", PERSON)
    api = Api(gateway).login("Ziekenhuis")
    assert api.post("/v1/suppressions", json={"address": PERSON, "reason": "asked"}).status_code == 201

    export = gateway.cli("gdpr", "export", "--address", "Bob@Clinic.test")
    records = export["records"]
    assert export["address"] == PERSON
    assert [m["id"] for m in records["messages"]] == [first]
    assert [r["status"] for r in records["recipients"]] == ["delivered"]
    assert any(e["kind"] == "delivered" for e in records["events"])
    assert [e["recipient"] for e in records["evidence"]] == [PERSON]
    assert records["accounts"][0]["notify_address"] == PERSON
    assert records["suppressions"][0]["reason"] == "asked"
    assert {e["kind"] for e in records["audit_log"]} >= {"evidence_exported", "suppression_added"}

    assert PERSON.encode() in raw_db_bytes(gateway)
    erased = gateway.cli("gdpr", "erase", "--address", PERSON)
    assert erased["pseudonym"].startswith("erased:") and erased["wal_cleared"]
    assert PERSON.encode() not in raw_db_bytes(gateway)
    shown = gateway.message(first)
    assert [r["address"] for r in shown["recipients"]] == [erased["pseudonym"]]
    assert not any(gateway.cli("gdpr", "export", "--address", PERSON)["records"].values())
    ok = gateway.cli_process("audit", "verify")
    assert ok.returncode == 0, ok.stdout
    kinds = [e["kind"] for e in gateway.cli("audit", "list", "--kind", "gdpr_erased")]
    assert kinds == ["gdpr_erased"]

    # Retention: only the finished message older than the account's period goes.
    second = delivered_to(gateway, customer, "carol@clinic.test")
    gateway.cli("account", "update", "Ziekenhuis", "--retention-days", "7")
    long_ago = time.time() - 8 * 86400
    write_db(gateway, ("UPDATE messages SET finished_at = ? WHERE id = ?", (long_ago, first)))
    purged = gateway.cli("gdpr", "purge")
    assert purged["messages"] == 1
    assert gateway.cli("message", "show", first, check=False) is None
    assert gateway.message(second)["recipients"][0]["status"] == "delivered"
    assert gateway.cli("audit", "list", "--kind", "retention_purged")[0]["detail"]["messages"] == 1


def test_gdpr_through_the_api_is_for_operators_only(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("clinic.test")
    delivered_to(gateway, customer, PERSON)
    customer_api = Api(gateway).login("Ziekenhuis")
    body = problem(customer_api.post("/v1/gdpr/export", json={"address": PERSON}), 403)
    assert "operator:gdpr" in body["detail"]

    operator = Api(gateway).login("Ziekenhuis", "operator:gdpr")
    problem(operator.post("/v1/gdpr/export", json={"address": "not an address"}), 422)
    r = operator.post("/v1/gdpr/export", json={"address": PERSON})
    assert r.status_code == 200, r.text
    assert r.json()["records"]["recipients"][0]["address"] == PERSON

    mx.script("rcpt", "451 4.3.0 later", "451 4.3.0 later", "451 4.3.0 later")
    pending = gateway.send(customer, [PERSON])
    gateway.wait_status(pending, {"deferred"})
    blocked = problem(operator.post("/v1/gdpr/erase", json={"address": PERSON}), 409)
    assert "still in delivery" in blocked["detail"]

    gateway.wait_status(pending, {"delivered"}, timeout=30)
    r = operator.post("/v1/gdpr/erase", json={"address": PERSON})
    assert r.status_code == 200, r.text
    assert r.json()["pseudonymised"]["recipients"] == 2
    assert PERSON.encode() not in raw_db_bytes(gateway)
    erasure = gateway.cli("audit", "list", "--kind", "gdpr_erased")[0]
    assert erasure["actor"].startswith("api:api-ziekenhuis-")
    assert gateway.cli("audit", "verify")["intact"]


def test_init_again_records_nothing_new(make_gateway) -> None:
    gw = make_gateway()
    gw.cli("init")
    assert [e["kind"] for e in gw.cli("audit", "list")] == ["keys_created"]


def test_the_running_gateway_purges_on_its_own(
    make_gateway, dns, world: World, sender_mx
) -> None:
    gw = make_gateway(gdpr__purge_interval=0.5).start()
    world.domain("clinic.test")
    customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    old = delivered_to(gw, customer, PERSON)
    new = delivered_to(gw, customer, "carol@clinic.test")
    long_ago = time.time() - 31 * 86400  # past the default 30 days
    write_db(gw, ("UPDATE messages SET finished_at = ? WHERE id = ?", (long_ago, old)))
    deadline = time.monotonic() + 20
    while gw.cli("message", "show", old, check=False) is not None:
        assert time.monotonic() < deadline, "the gateway did not purge the old message"
        time.sleep(0.2)
    assert gw.message(new)["recipients"][0]["status"] == "delivered"
    purges = gw.cli("audit", "list", "--kind", "retention_purged")
    assert [(p["actor"], p["detail"]["messages"]) for p in purges] == [("gateway:retention", 1)]
