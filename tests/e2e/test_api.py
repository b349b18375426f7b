"""The REST API end to end: OAuth 2, sending, status, evidence, idempotency, limits."""

from __future__ import annotations

import base64
import email
import json
import time

import pytest

from tests.e2e.api_client import Api, problem
from tests.e2e.world import Customer, GatewayProcess, World

MSG = {
    "from": "Alice <alice@hospital.test>",
    "to": ["dr@clinic.test"],
    "subject": "Lab",
    "text": "private result",
}


@pytest.fixture
def api(gateway: GatewayProcess, customer: Customer) -> Api:
    return Api(gateway).login("Ziekenhuis")


def wait_status(api: Api, qid: str, wanted: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = api.get(f"/v1/messages/{qid}").json()
        if all(r["status"] in wanted for r in body["recipients"]):
            return body
        time.sleep(0.2)
    raise AssertionError(body)


def test_token_endpoint_follows_rfc_6749(gateway: GatewayProcess, customer: Customer) -> None:
    api = Api(gateway)
    client_id, secret = api.credential("Ziekenhuis", "messages:read")
    ok = api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    body = ok.json()
    assert (
        body["token_type"] == "Bearer"
        and body["scope"] == "messages:read"
        and body["expires_in"] > 0
    )
    wrong = problem(
        api.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")
        ),
        401,
    )
    assert wrong["error"] == "invalid_client"
    grant = problem(
        api.client.post("/oauth/token", data={"grant_type": "password"}, auth=(client_id, secret)),
        400,
    )
    assert grant["error"] == "unsupported_grant_type"
    scope = problem(
        api.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "messages:send"},
            auth=(client_id, secret),
        ),
        400,
    )
    assert scope["error"] == "invalid_scope"


def test_send_structured_then_read_status_attempts_and_evidence(api: Api, world: World) -> None:
    mx = world.domain("clinic.test")
    r = api.post("/v1/messages", json={**MSG, "metadata": {"case": "42"}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["recipients"] == [
        {
            "address": "dr@clinic.test",
            "status": "queued",
            "reply": None,
            "enhanced": None,
            "attempts": 0,
        }
    ]
    got = mx.wait_for(1)[0]
    parsed = email.message_from_bytes(got.data)
    assert parsed["Subject"] == "Lab" and "DKIM-Signature" in parsed
    shown = wait_status(api, body["id"], {"delivered"})
    assert shown["metadata"] == {"case": "42"}
    # The history in the order things happened, with their times in that order too
    # (signing is written in the delivery's transaction when both run in one process).
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[:3] == ["accepted", "signed", "delivered"], kinds
    times = [e["at"] for e in shown["events"]]
    assert times == sorted(times)
    assert shown["events"][1]["detail"]["dkim"], "which keys signed it"
    attempt = shown["attempts"][-1]
    assert attempt["route"] == "verified" and attempt["tls_version"] == got.tls_version
    assert shown["recipients"][0]["attempts"] == 1
    ev = api.get(f"/v1/messages/{body['id']}/evidence/dr@clinic.test")
    assert ev.status_code == 200
    assert ev.json()["record"]["recipient"] == "dr@clinic.test"
    listed = api.get("/v1/messages", params={"status": "delivered"}).json()
    assert [m["id"] for m in listed["items"]] == [body["id"]]


def test_raw_mime_with_bcc_is_sent_without_the_bcc_field(api: Api, world: World) -> None:
    mx = world.domain("clinic.test")
    raw = (
        b"From: alice@hospital.test\r\nTo: a@clinic.test\r\nBcc: secret@clinic.test\r\n"
        b"Subject: raw\r\n\r\nbody\r\n"
    )
    r = api.post("/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"})
    assert r.status_code == 202, r.text
    got = mx.wait_for(1)[0]
    assert sorted(got.rcpt_to) == ["a@clinic.test", "secret@clinic.test"]
    assert b"Bcc:" not in got.data and b"secret@" not in got.data


def test_idempotency_key_never_sends_twice(api: Api, world: World) -> None:
    mx = world.domain("clinic.test")
    first = api.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-77"})
    again = api.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-77"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    # the same JSON, re-serialised by another client library: other key order, white space
    reordered = json.dumps(dict(reversed(MSG.items())), indent=2, ensure_ascii=True)
    retried = api.post(
        "/v1/messages",
        content=reordered.encode(),
        headers={"Idempotency-Key": "order-77", "Content-Type": "application/json; charset=utf-8"},
    )
    assert retried.status_code == 202, retried.text
    assert retried.json() == first.json() and retried.headers.get("idempotent-replayed") == "true"
    other = problem(
        api.post(
            "/v1/messages",
            json={**MSG, "subject": "changed"},
            headers={"Idempotency-Key": "order-77"},
        ),
        422,
    )
    assert other["field"] == "Idempotency-Key"
    mx.wait_for(1)
    time.sleep(1.0)
    assert len(mx.received) == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"subject": "Hi\r\nBcc: evil@x.test"}, "subject"),
        ({"headers": {"X-Case": "1\nX-Evil: yes"}}, "headers.X-Case"),
        ({"headers": {"X-Null": "a\x00b"}}, "headers.X-Null"),
        ({"from": "alice@hospital.test\r\nFrom: ceo@bank.test"}, "from"),
        ({"headers": {"Received": "forged"}}, "headers.Received"),
    ],
)
def test_header_injection_is_refused_with_the_field(api: Api, patch: dict, field: str) -> None:
    body = problem(api.post("/v1/messages", json={**MSG, **patch}), 422)
    assert body["field"] == field


def test_sender_checks_are_the_same_as_smtp(api: Api) -> None:
    spoof = problem(api.post("/v1/messages", json={**MSG, "from": "ceo@bank.test"}), 403)
    assert "bank.test is not a domain of your account" in spoof["detail"] and spoof["field"] == "from"
    api.post("/v1/suppressions", json={"address": "gone@clinic.test", "reason": "left"})
    suppressed = problem(api.post("/v1/messages", json={**MSG, "to": ["gone@clinic.test"]}), 422)
    assert "suppressed" in suppressed["detail"] and suppressed["field"] == "to"


def test_scopes_are_enforced(gateway: GatewayProcess, customer: Customer) -> None:
    reader = Api(gateway).login("Ziekenhuis", "messages:read")
    body = problem(reader.post("/v1/messages", json=MSG), 403)
    assert "messages:send" in body["detail"]
    assert reader.get("/v1/messages").status_code == 200


def test_admission_control_answers_503_with_retry_after(make_gateway, dns, world: World) -> None:
    gw = make_gateway(bus__queue_bound=1).start("submission", "api")
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    assert api.post("/v1/messages", json=MSG).status_code == 202
    busy = api.post("/v1/messages", json=MSG)
    problem(busy, 503)
    assert busy.headers["retry-after"].isdigit()
    metrics = api.client.get("/metrics").text
    assert "secumail_admissions_refused_total 1" in metrics


def test_rate_limit_answers_429_with_retry_after(make_gateway, dns, world: World) -> None:
    gw = make_gateway(api__rate_limit_per_minute=3).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    codes = [api.get("/v1/messages").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    assert int(api.get("/v1/messages").headers["retry-after"]) >= 1


def test_checks_endpoint_is_the_preflight(api: Api, world: World) -> None:
    world.domain("good.test")
    world.domain("plain.test", "no_starttls")
    r = api.post("/v1/checks", json={"addresses": ["a@good.test", "b@plain.test"]})
    assert r.status_code == 200, r.text
    good, plain = r.json()["results"]
    assert (good["secure"], good["method"], good["reasons"]) == (True, "verified", [])
    assert plain["secure"] is False and any("STARTTLS" in why for why in plain["reasons"])


def test_operations_endpoints(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}
    metrics = api.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'secumail_queue_depth{stage="route"} 0' in metrics.text
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/messages" in spec["paths"] and "/oauth/token" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_message_metadata_rejects_control_characters(api: Api) -> None:
    body = problem(api.post("/v1/messages", json={**MSG, "metadata": {"k": "a\r\nb"}}), 422)
    assert body["field"] == "metadata.k"


def test_attachments_are_carried(api: Api, world: World) -> None:
    mx = world.domain("clinic.test")
    pdf = b"%PDF-1.4 fake"
    r = api.post(
        "/v1/messages",
        json={
            **MSG,
            "attachments": [
                {
                    "filename": "uitslag.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                }
            ],
        },
    )
    assert r.status_code == 202, r.text
    parsed = email.message_from_bytes(mx.wait_for(1)[0].data)
    parts = [p for p in parsed.walk() if p.get_filename() == "uitslag.pdf"]
    assert parts and parts[0].get_payload(decode=True) == pdf


def test_message_list_pages_with_a_cursor_and_filters(api: Api, world: World) -> None:
    world.domain("clinic.test")
    ids = [api.post("/v1/messages", json={**MSG, "to": [f"p{i}@clinic.test"]}).json()["id"] for i in range(3)]
    first = api.get("/v1/messages", params={"limit": 2}).json()
    assert [m["id"] for m in first["items"]] == ids[::-1][:2], "newest first"
    second = api.get("/v1/messages", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in second["items"]] == [ids[0]] and second["next_cursor"] is None
    only = api.get("/v1/messages", params={"recipient": "p1@clinic.test"}).json()
    assert [m["id"] for m in only["items"]] == [ids[1]]
    problem(api.get("/v1/messages", params={"cursor": "%%%"}), 422)


def test_attempt_counts_agree_with_the_attempt_list(api: Api, world: World) -> None:
    """A recipient decided without trying a server shows 0 attempts next to an empty
    list, never `attempts: 1` beside `attempts: []`."""
    mx = world.domain("clinic.test")
    r = api.post("/v1/messages", json={**MSG, "to": ["dr@clinic.test", "x@does-not-exist.test"]})
    assert r.status_code == 202, r.text
    shown = wait_status(api, r.json()["id"], {"delivered", "bounced"})
    by = {x["address"]: x for x in shown["recipients"]}
    assert by["x@does-not-exist.test"]["status"] == "bounced"
    assert by["x@does-not-exist.test"]["attempts"] == 0
    assert by["dr@clinic.test"]["attempts"] == 1
    assert {a["domain"] for a in shown["attempts"]} == {"clinic.test"}
    mx.wait_for(1)
