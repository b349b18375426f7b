"""Webhooks: signed events to the customer's HTTPS endpoint; no SSRF."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from tests.e2e.api_client import Api, problem
from tests.e2e.world import Customer, GatewayProcess, World

SECRET = "whsec-0123456789abcdef"


def _verify(secret: str, header: str, body: bytes, window: float = 300) -> bool:
    """What a receiver does: check the HMAC and reject old timestamps (replay)."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    ts = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - ts) < window


def _wait_posts(server, n: int, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posts = [r for r in server.requests if r.method == "POST" and r.path == "/hooks"]
        if len(posts) >= n:
            return posts
        time.sleep(0.1)
    raise AssertionError(f"{n} webhook posts expected, got {len(server.requests)} requests")


def test_refused_insecure_reaches_the_webhook_with_a_valid_signature(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    gw = make_gateway(api__webhooks_port=sts_port).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    receiver = sts_server()
    dns.add("hooks.hospital.test", "A", World.STS_IP)
    receiver.add_certificate("hooks.hospital.test", world.ca.issue("hooks.hospital.test"))
    receiver.set_route(
        "/hooks", 200, {"Content-Type": "text/plain"}, "ok", host="hooks.hospital.test"
    )
    created = api.post(
        "/v1/webhooks",
        json={
            "url": "https://hooks.hospital.test/hooks",
            "events": ["refused_insecure", "delivered"],
            "secret": SECRET,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["secret"] == SECRET
    assert (
        "secret" not in api.get("/v1/webhooks").json()[0]
        or api.get("/v1/webhooks").json()[0]["secret"] is None
    )
    world.domain("plain.test", "no_starttls")
    qid = api.post(
        "/v1/messages",
        json={
            "from": "alice@hospital.test",
            "to": ["x@plain.test"],
            "text": "t",
            "metadata": {"case": "7"},
        },
    ).json()["id"]
    post = _wait_posts(receiver, 1)[0]
    assert _verify(SECRET, post.headers["secumail-signature"], post.body)
    assert not _verify("another-secret-000000", post.headers["secumail-signature"], post.body)
    event = json.loads(post.body)
    assert (
        event["type"] == "refused_insecure" and post.headers["secumail-event"] == "refused_insecure"
    )
    assert event["data"]["message_id"] == qid and event["data"]["recipient"] == "x@plain.test"
    assert event["data"]["metadata"] == {"case": "7"}
    assert any("STARTTLS" in r for r in event["data"]["reasons"])
    deadline = time.monotonic() + 10
    deliveries: list = []
    while time.monotonic() < deadline:
        deliveries = api.get(f"/v1/webhooks/{created.json()['id']}/deliveries").json()
        if deliveries and deliveries[0]["status"] == "delivered":
            break
        time.sleep(0.2)
    assert deliveries[0]["status"] == "delivered" and deliveries[0]["last_status"] == 200
    assert len(deliveries) == 1, "the notice to the sender is not a webhook event of the recipient"


def test_webhook_targets_on_private_networks_are_refused(
    gateway: GatewayProcess, customer: Customer, dns
) -> None:
    gw = gateway
    gw.stop()
    gw.config.write_text(
        gw.config.read_text().replace(
            "webhooks_allow_private = true", "webhooks_allow_private = false"
        )
    )
    gw.start()
    api = Api(gw).login("Ziekenhuis")
    dns.add("intranet.hospital.test", "A", "127.0.0.1")
    body = problem(
        api.post(
            "/v1/webhooks",
            json={"url": "https://intranet.hospital.test/x", "events": ["delivered"]},
        ),
        422,
    )
    assert body["field"] == "url" and "non-public" in body["detail"]
    plain = problem(
        api.post("/v1/webhooks", json={"url": "http://example.test/x", "events": ["delivered"]}),
        422,
    )
    assert plain["field"] == "url"


def test_domain_api_adds_checks_and_reports_dns_errors(
    gateway: GatewayProcess, customer: Customer, dns
) -> None:
    api = Api(gateway).login("Ziekenhuis")
    added = api.post("/v1/domains", json={"name": "Afdeling.Hospital.test"})
    assert added.status_code == 201, added.text
    domain = added.json()
    assert domain["name"] == "afdeling.hospital.test" and domain["verified"] is False
    required = [r for r in domain["records"] if r["required"]]
    assert {r["name"].split(".")[0] for r in required} >= {"_secumail"}
    assert sum("._domainkey." in r["name"] for r in required) == 2
    checked = api.post("/v1/domains/afdeling.hospital.test/verify").json()
    assert checked["verified"] is False and not any(c["ok"] for c in checked["checks"])
    for r in required:
        dns.add(
            r["name"],
            "TXT",
            " ".join(f'"{r["value"][i : i + 255]}"' for i in range(0, len(r["value"]), 255)),
        )
    ok = api.post("/v1/domains/afdeling.hospital.test/verify").json()
    assert ok["verified"] is True and ok["dkim_published"] is True
    assert api.get("/v1/domains/afdeling.hospital.test").json()["verified"] is True
    assert api.delete("/v1/domains/afdeling.hospital.test").status_code == 204
    problem(api.get("/v1/domains/afdeling.hospital.test"), 404)
