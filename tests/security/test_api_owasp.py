"""The REST API against the OWASP API Security Top 10 (2023) cases that apply to it.

Extends tests/e2e/test_api_security.py (token basics, tenants on the main routes) and
test_api_webhooks.py (a loopback webhook refused): here every route that takes an id is
taken from the published OpenAPI document, so a new route cannot be forgotten.

- API1 object-level authorisation: tenant B with tenant A's ids, on every route; lists,
  filters, cursors and Idempotency-Keys stay inside the account.
- API2 authentication: tokens of another issuer, tampered, unsigned-claim tricks, a key
  embedded in the header, the token in the URL; revoked and SMTP credentials at the
  token endpoint; scope escalation.
- API3 property-level authorisation (mass assignment): extra JSON fields are refused
  with the field named and never applied.
- API4 resource consumption: the per-account rate limit, oversized bodies (413).
- API7 SSRF: webhook URLs naming or resolving to internal addresses, DNS rebinding
  between registration and dispatch, redirects. All traffic stays on 127.0.0.0/8: an
  "internal" or "public-looking" address only ever appears in a harness DNS answer, and
  the dispatch-time cases run the real dispatcher with its HTTPS request replaced by a
  recorder, so nothing can be dialled at all.
- API8 misconfiguration: every error is an RFC 9457 problem document with a reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from secumail.net.dns import Resolver
from secumail.pipeline import webhooks as webhooks_module
from secumail.pipeline.webhooks import UnsafeTarget, WebhookDispatcher, check_target
from secumail.store.webhooks import Webhook, WebhookDelivery
from tests.e2e.api_client import Api, problem
from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns

pytestmark = pytest.mark.e2e

MSG = {"from": "alice@hospital.test", "to": ["dr@clinic.test"], "subject": "Lab", "text": "x"}
HOOK_HOST = "hooks.hospital.test"


@pytest.fixture
def tenants(gateway: GatewayProcess, customer: Customer, dns, world: World) -> tuple[Api, Api]:
    world.domain("school.test")
    gateway.onboard(dns, "School", "school.test")
    return Api(gateway).login("Ziekenhuis"), Api(gateway).login("School")


@pytest.fixture
def hospital_objects(tenants: tuple[Api, Api], world: World, gateway: GatewayProcess, dns) -> dict:
    """Tenant A (Ziekenhuis) owns one of everything: a delivered message with evidence,
    a webhook, a suppression, its domain."""
    hospital, _ = tenants
    world.domain("clinic.test")
    dns.add(HOOK_HOST, "A", "127.0.0.251")
    sent = hospital.post("/v1/messages", json=MSG)
    assert sent.status_code == 202, sent.text
    gateway.wait_status(sent.json()["id"], {"delivered"})
    hook = hospital.post("/v1/webhooks", json={"url": f"https://{HOOK_HOST}/x", "events": ["delivered"]})
    assert hook.status_code == 201, hook.text
    assert hospital.post("/v1/suppressions", json={"address": "gone@clinic.test"}).status_code == 201
    return {
        "message_id": sent.json()["id"],
        "recipient": "dr@clinic.test",
        "name": "hospital.test",
        "hook_id": hook.json()["id"],
        "address": "gone@clinic.test",
    }


def _routes_with_ids(api: Api) -> list[tuple[str, str, list[str]]]:
    spec = api.client.get("/openapi.json").json()
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            if names:
                out.append((method.upper(), path, names))
    return out


# -- API1: object-level authorisation ---------------------------------------------------
def test_every_route_that_takes_an_id_refuses_another_tenants_object(
    tenants: tuple[Api, Api], hospital_objects: dict
) -> None:
    hospital, school = tenants
    routes = _routes_with_ids(hospital)
    assert len(routes) >= 9, routes  # the spec lists them; a broken spec would hide routes
    for method, path, names in routes:
        unknown = set(names) - set(hospital_objects)
        assert not unknown, f"{method} {path}: new path parameter {unknown}; give this test an object for it"
        url = path.format(**hospital_objects)
        answer = problem(school.client.request(method, url, headers=school._headers(None)), 404)
        assert hospital_objects[names[-1]] in answer["detail"] or "no " in answer["detail"], answer
    # School's attempts changed nothing of the hospital's
    for method, path, _names in routes:
        if method == "GET":
            url = path.format(**hospital_objects)
            assert hospital.get(url).status_code == 200, url
    assert hospital.get("/v1/domains/hospital.test").json()["verified"] is True
    assert [h["id"] for h in hospital.get("/v1/webhooks").json()] == [hospital_objects["hook_id"]]


def test_another_tenants_id_and_a_missing_id_get_the_same_answer(
    tenants: tuple[Api, Api], hospital_objects: dict
) -> None:
    """No oracle: "exists but not yours" and "does not exist" look alike."""
    _, school = tenants
    theirs = problem(school.get(f"/v1/messages/{hospital_objects['message_id']}"), 404)
    missing = problem(school.get("/v1/messages/06H1NOSUCHMESSAGE0000000000"), 404)
    assert (theirs["type"], theirs["title"]) == (missing["type"], missing["title"])
    assert theirs["detail"].replace(hospital_objects["message_id"], "X") == missing["detail"].replace(
        "06H1NOSUCHMESSAGE0000000000", "X"
    )
    hook = problem(school.delete(f"/v1/webhooks/{hospital_objects['hook_id']}"), 404)
    nohook = problem(school.delete("/v1/webhooks/wh_0000000000000000"), 404)
    assert hook["detail"].replace(hospital_objects["hook_id"], "X") == nohook["detail"].replace(
        "wh_0000000000000000", "X"
    )


def test_lists_filters_and_cursors_stay_inside_the_account(
    tenants: tuple[Api, Api], hospital_objects: dict
) -> None:
    hospital, school = tenants
    mid = hospital_objects["message_id"]
    assert school.get("/v1/messages", params={"recipient": "dr@clinic.test"}).json()["items"] == []
    # a cursor is only a position: one made from the hospital's id shows nothing of it
    forged = base64.urlsafe_b64encode(json.dumps(mid + "~").encode()).decode().rstrip("=")
    page = school.get("/v1/messages", params={"cursor": forged})
    assert page.status_code == 200 and page.json()["items"] == []
    assert school.get("/v1/suppressions").json()["items"] == []
    assert school.get("/v1/webhooks").json() == []
    assert [m["id"] for m in hospital.get("/v1/messages").json()["items"]] == [mid]


def test_idempotency_keys_are_per_account(tenants: tuple[Api, Api], hospital_objects: dict) -> None:
    """B reusing A's Idempotency-Key never gets A's stored answer (A's message id)."""
    hospital, school = tenants
    first = hospital.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-4711"})
    assert first.status_code == 202
    replay = hospital.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-4711"})
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json() == first.json()
    # the very same request by B: refused on its own merits (not B's domain), no replay
    same = school.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-4711"})
    assert "idempotent-replayed" not in same.headers
    assert first.json()["id"] not in same.text
    problem(same, 403)
    own = {**MSG, "from": "bob@school.test"}
    mine = school.post("/v1/messages", json=own, headers={"Idempotency-Key": "order-4711"})
    assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]


def test_suppressions_of_one_address_are_separate_per_account(
    tenants: tuple[Api, Api], hospital_objects: dict
) -> None:
    hospital, school = tenants
    added = school.post("/v1/suppressions", json={"address": "gone@clinic.test", "reason": "school's"})
    assert added.status_code == 201 and added.json()["reason"] == "school's"
    assert hospital.get("/v1/suppressions/gone@clinic.test").json()["reason"] != "school's"
    assert school.delete("/v1/suppressions/gone@clinic.test").status_code == 204
    assert hospital.get("/v1/suppressions/gone@clinic.test").status_code == 200


# -- API2: authentication -----------------------------------------------------------------
def _server_key(gateway: GatewayProcess) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(
        (gateway.data_dir / "keys" / "api-token.key").read_bytes(), password=None
    )
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_more_token_attacks_are_refused_with_a_reason(
    tenants: tuple[Api, Api], gateway: GatewayProcess
) -> None:
    hospital, school = tenants
    assert hospital.token and school.token
    claims = jwt.decode(hospital.token, options={"verify_signature": False})
    school_claims = jwt.decode(school.token, options={"verify_signature": False})
    key = _server_key(gateway)
    raw = Api(gateway)

    def refused(token: str) -> str:
        raw.token = token
        return problem(raw.get("/v1/messages"), 401)["detail"]

    # another issuer, though signed with the real key
    assert "issuer" in refused(jwt.encode({**claims, "iss": "https://evil.test"}, key, algorithm="EdDSA"))
    # signature tampered in its middle (the last character only carries padding bits)
    head, body, sig = hospital.token.split(".")
    middle = len(sig) // 2
    flipped = sig[:middle] + ("A" if sig[middle] != "A" else "B") + sig[middle + 1 :]
    assert "invalid token" in refused(f"{head}.{body}.{flipped}")
    # payload swapped for the other tenant's account, signature kept
    swapped = _b64(json.dumps({**claims, "acct": school_claims["acct"]}).encode())
    assert "invalid token" in refused(f"{head}.{swapped}.{sig}")
    # no expiry, and not valid yet (both signed with the real key)
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    assert "exp" in refused(jwt.encode(no_exp, key, algorithm="EdDSA"))
    later = int(time.time()) + 3600
    assert "invalid token" in refused(
        jwt.encode({**claims, "nbf": later, "iat": later, "exp": later + 60}, key, algorithm="EdDSA")
    )
    # the attacker's own key, offered in the header (jwk) and signing the token
    attacker = ed25519.Ed25519PrivateKey.generate()
    public = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    embedded = jwt.encode(
        claims, attacker, algorithm="EdDSA", headers={"jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(public)}}
    )
    assert "invalid token" in refused(embedded)
    # a valid token in the URL instead of the Authorization header is not read
    raw.token = None
    problem(raw.get("/v1/messages", params={"access_token": hospital.token}), 401)
    # the real token still works: the failures above were about the attacks
    assert hospital.get("/v1/messages").status_code == 200


def test_token_endpoint_refuses_smtp_revoked_and_escalating_clients(
    gateway: GatewayProcess, customer: Customer
) -> None:
    api = Api(gateway)

    def token(client_id: str, secret: str, **form: str) -> Any:
        return api.client.post(
            "/oauth/token", data={"grant_type": "client_credentials", **form}, auth=(client_id, secret)
        )

    # an SMTP credential is not an API client
    smtp = token(customer.username, customer.password)
    assert problem(smtp, 401)["error"] == "invalid_client"
    # a client limited to messages:read cannot ask for more, nor send
    client_id, secret = api.credential("Ziekenhuis", "messages:read")
    assert problem(token(client_id, secret, scope="messages:read domains:manage"), 400)["error"] == "invalid_scope"
    granted = token(client_id, secret, account_id="someone-else", acct="someone-else")
    assert granted.status_code == 200 and granted.headers["cache-control"] == "no-store"
    claims = jwt.decode(granted.json()["access_token"], options={"verify_signature": False})
    assert claims["acct"] == customer.account_id and claims["scope"] == "messages:read"
    api.token = granted.json()["access_token"]
    assert "messages:send" in problem(api.post("/v1/messages", json=MSG), 403)["detail"]
    # a revoked client gets no new token (and its old one stops working: test_api_security)
    cred = next(c for c in gateway.cli("credential", "list") if c.get("username") == client_id)
    gateway.cli("credential", "revoke", cred["id"])
    assert problem(token(client_id, secret), 401)["error"] == "invalid_client"


def test_token_endpoint_limits_failed_client_authentication(
    gateway: GatewayProcess, customer: Customer
) -> None:
    api = Api(gateway)
    client_id, secret = api.credential("Ziekenhuis")

    def token(password: str):
        return api.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, password)
        )

    codes = [token(f"guess-{i}").status_code for i in range(12)]
    # submission.auth_failure_limit (5) failures, then refused before the slow hash
    assert codes == [401] * 5 + [429] * 7, codes
    throttled = token(secret)  # now even the right secret waits out the window
    assert "too many failed logins" in problem(throttled, 429)["detail"]
    assert int(throttled.headers["Retry-After"]) > 0


# -- API3: mass assignment ------------------------------------------------------------
def test_extra_fields_are_refused_and_never_applied(
    tenants: tuple[Api, Api], hospital_objects: dict
) -> None:
    hospital, school = tenants
    school_account = jwt.decode(school.token or "", options={"verify_signature": False})["acct"]
    before = {
        "messages": hospital.get("/v1/messages").json()["items"],
        "webhooks": hospital.get("/v1/webhooks").json(),
        "domains": hospital.get("/v1/domains").json(),
        "school_messages": school.get("/v1/messages").json()["items"],
    }
    attempts = [
        ("/v1/messages", {**MSG, "account_id": school_account}, "account_id"),
        ("/v1/messages", {**MSG, "status": "delivered"}, "status"),
        ("/v1/messages", {**MSG, "id": "06H1CHOSENID"}, "id"),
        ("/v1/messages", {**MSG, "dsn_of": "06H1OTHER"}, "dsn_of"),
        (
            "/v1/webhooks",
            {"url": f"https://{HOOK_HOST}/y", "events": ["delivered"], "account_id": school_account},
            "account_id",
        ),
        ("/v1/webhooks", {"url": f"https://{HOOK_HOST}/y", "events": ["delivered"], "id": "wh_mine"}, "id"),
        ("/v1/domains", {"name": "new.hospital.test", "verified": True}, "verified"),
        ("/v1/domains", {"name": "new.hospital.test", "account_id": school_account}, "account_id"),
        ("/v1/suppressions", {"address": "x@clinic.test", "origin": "bounce"}, "origin"),
        ("/v1/suppressions", {"address": "x@clinic.test", "scopes": ["domains:manage"]}, "scopes"),
        ("/v1/checks", {"addresses": ["a@clinic.test"], "account_id": school_account}, "account_id"),
    ]
    for path, body, extra in attempts:
        answer = problem(hospital.post(path, json=body), 422)
        assert answer["field"] == extra, (path, answer)
    assert hospital.get("/v1/messages").json()["items"] == before["messages"]
    assert hospital.get("/v1/webhooks").json() == before["webhooks"]
    assert hospital.get("/v1/domains").json() == before["domains"]
    assert school.get("/v1/messages").json()["items"] == before["school_messages"]
    problem(hospital.get("/v1/suppressions/x@clinic.test"), 404)


# -- API7: SSRF through webhook URLs ------------------------------------------------------
INTERNAL_ANSWERS = [
    ("A", "127.0.0.1"),
    ("A", "127.255.255.254"),
    ("A", "0.0.0.0"),
    ("A", "10.1.2.3"),
    ("A", "172.16.0.1"),
    ("A", "192.168.1.1"),
    ("A", "169.254.169.254"),  # cloud metadata
    ("A", "100.64.0.1"),  # carrier-grade NAT
    ("A", "192.0.0.170"),
    ("A", "198.18.0.1"),
    ("A", "224.0.0.1"),
    ("A", "255.255.255.255"),
    ("AAAA", "::1"),
    ("AAAA", "::"),
    ("AAAA", "::ffff:127.0.0.1"),
    ("AAAA", "::ffff:169.254.169.254"),
    ("AAAA", "fe80::1"),
    ("AAAA", "fc00::1"),
    ("AAAA", "fd12:3456::1"),
    ("AAAA", "ff02::1"),
    ("AAAA", "2001:db8::1"),
]
# IPv4 hidden in IPv6 forms that Python 3.11's ipaddress calls global.
EMBEDDED_IPV4_ANSWERS = [
    ("AAAA", "64:ff9b::7f00:1"),  # NAT64 (RFC 6052) of 127.0.0.1
    ("AAAA", "64:ff9b::a9fe:a9fe"),  # NAT64 of 169.254.169.254
    ("AAAA", "64:ff9b:1::a00:1"),  # local-use NAT64 (RFC 8215) of 10.0.0.1
    ("AAAA", "2002:7f00:1::1"),  # 6to4 (RFC 3056) of 127.0.0.1
    ("AAAA", "::127.0.0.1"),  # IPv4-compatible (deprecated, RFC 4291 §2.5.5.1)
]


@pytest.fixture
def strict_gateway(make_gateway) -> GatewayProcess:
    """A gateway as shipped: webhooks only to public addresses."""
    return make_gateway(api__webhooks_allow_private=False).start()


def _register_answers(
    gw: GatewayProcess, dns: AuthoritativeDns, world: World, answers: list[tuple[str, str]]
) -> list[str]:
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    accepted = []
    for i, (rdtype, address) in enumerate(answers):
        host = f"t{i}.hooks.hospital.test"
        dns.add(host, rdtype, address)
        r = api.post("/v1/webhooks", json={"url": f"https://{host}/x", "events": ["delivered"]})
        if r.status_code != 422:
            accepted.append(f"{rdtype} {address} → {r.status_code}")
            if r.status_code == 201:  # never leave a hook to a non-loopback address behind
                assert api.delete(f"/v1/webhooks/{r.json()['id']}").status_code == 204
        else:
            body = problem(r, 422)
            assert body["field"] == "url" and address.split("%")[0] in body["detail"], body
    return accepted


def test_webhook_hosts_resolving_to_internal_addresses_are_refused(
    strict_gateway: GatewayProcess, dns: AuthoritativeDns, world: World
) -> None:
    assert _register_answers(strict_gateway, dns, world, INTERNAL_ANSWERS) == []


def test_webhook_hosts_resolving_to_ipv4_embedded_in_ipv6_are_refused(
    strict_gateway: GatewayProcess, dns: AuthoritativeDns, world: World
) -> None:
    assert _register_answers(strict_gateway, dns, world, EMBEDDED_IPV4_ANSWERS) == []


def test_webhook_urls_naming_internal_addresses_are_refused(
    strict_gateway: GatewayProcess, dns: AuthoritativeDns, world: World
) -> None:
    world.domain("hospital.test")
    strict_gateway.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(strict_gateway).login("Ziekenhuis")
    # "nowhere.hospital.test" has no address: no URL here can name a reachable public host
    urls = [
        "https://127.0.0.1/x",
        "https://127.1/x",
        "https://2130706433/x",  # decimal 127.0.0.1
        "https://0x7f000001/x",  # hex
        "https://0177.0.0.1/x",  # octal
        "https://017700000001/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[::ffff:7f00:1]/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/x",
        "https://nowhere.hospital.test@127.0.0.1/x",  # userinfo: the host is 127.0.0.1
        "https://127.0.0.1#@nowhere.hospital.test/x",
        "http://nowhere.hospital.test/x",
        "ftp://nowhere.hospital.test/x",
        "file:///etc/passwd",
        "gopher://127.0.0.1:25/x",
    ]
    accepted = []
    for url in urls:
        r = api.post("/v1/webhooks", json={"url": url, "events": ["delivered"]})
        if r.status_code != 422:
            accepted.append(f"{url} → {r.status_code}")
        else:
            assert problem(r, 422)["field"] == "url"
    assert accepted == []
    assert api.get("/v1/webhooks").json() == []


class _FakeHooks:
    """The dispatcher's store, in memory: one webhook, attempts recorded."""

    def __init__(self, url: str) -> None:
        self.hook = Webhook("wh_test", "acc", url, ("delivered",), "s" * 32, time.time())
        self.attempts: list[dict] = []

    async def get(self, hook_id: str) -> Webhook | None:
        return self.hook

    async def record_attempt(self, delivery_id: int, **outcome: Any) -> None:
        self.attempts.append(outcome)


def _dispatch_once(dns: AuthoritativeDns, url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """One delivery by the real WebhookDispatcher (real resolver on the harness DNS, real
    check); its HTTPS request is a recorder, so no connection is ever made."""
    dialled: list[tuple[str, int]] = []

    async def recorder(method: str, url: str, **kw: Any) -> tuple[int, dict, bytes]:
        dialled.append(kw["connect_to"])
        return 200, {}, b""

    monkeypatch.setattr(webhooks_module, "request", recorder)
    store = _FakeHooks(url)
    dispatcher = WebhookDispatcher(
        store,  # type: ignore[arg-type]
        Resolver([dns.address], timeout=3.0),
        trust_file=None,
        allow_private=False,
    )
    delivery = WebhookDelivery(1, "wh_test", "evt_1", "delivered", "{}", "pending", 0, 0.0, None, None,
                               time.time(), None)
    asyncio.run(dispatcher._deliver(delivery))
    return dialled, store.attempts


def test_dns_rebinding_between_registration_and_dispatch_is_refused_before_connecting(
    dns: AuthoritativeDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "rebind.hooks.hospital.test"
    url = f"https://{host}/x"
    resolver = Resolver([dns.address], timeout=3.0)
    # registration: a public-looking answer (TTL 0: nobody may keep it) passes the check
    dns.add(host, "A", "93.184.216.34", ttl=0)
    check_target(url, asyncio.run(resolver.addresses(host)), allow_private=False)
    # dispatch: the name now answers loopback
    dns.remove(host, "A")
    dns.add(host, "A", "127.0.0.1", ttl=0)
    dialled, attempts = _dispatch_once(dns, url, monkeypatch)
    assert dialled == [], "the dispatcher dialled a rebound name"
    assert attempts and attempts[0]["ok"] is False and "non-public address 127.0.0.1" in attempts[0]["error"]
    # a mixed answer (public and internal) is refused as a whole
    dns.add(host, "A", "93.184.216.34", ttl=0)
    dialled, attempts = _dispatch_once(dns, url, monkeypatch)
    assert dialled == [] and "non-public" in attempts[0]["error"]


def test_dispatch_dials_the_address_it_checked(dns: AuthoritativeDns, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to the vetted address, never to a second lookup's answer."""
    host = "fixed.hooks.hospital.test"
    dns.add(host, "A", "93.184.216.34", ttl=0)
    dialled, attempts = _dispatch_once(dns, f"https://{host}:8443/x", monkeypatch)
    assert dialled == [("93.184.216.34", 8443)] and attempts[0]["ok"] is True
    with pytest.raises(UnsafeTarget):
        check_target(f"https://{host}/x", ["93.184.216.34", "10.0.0.1"], allow_private=False)


def test_webhook_redirects_are_not_followed(
    make_gateway, dns: AuthoritativeDns, world: World, sts_port: int, sts_server
) -> None:
    """A 3xx from the receiver is a failed attempt; its Location (an internal address
    here, on loopback) is never requested."""
    gw = make_gateway(api__webhooks_port=sts_port).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    receiver = sts_server()
    dns.add(HOOK_HOST, "A", World.STS_IP)
    receiver.add_certificate(HOOK_HOST, world.ca.issue(HOOK_HOST))
    internal = f"https://{World.STS_IP}:{sts_port}/internal"
    receiver.set_route("/hooks", 302, {"Location": internal}, "", host=HOOK_HOST)
    receiver.set_route("/internal", 200, {"Content-Type": "text/plain"}, "secret", host=HOOK_HOST)
    hook = api.post("/v1/webhooks", json={"url": f"https://{HOOK_HOST}/hooks", "events": ["domain_dns_error"]})
    assert hook.status_code == 201, hook.text
    assert api.post("/v1/domains", json={"name": "afdeling.hospital.test"}).status_code == 201
    api.post("/v1/domains/afdeling.hospital.test/verify")  # not published: domain_dns_error
    deliveries: list = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        deliveries = api.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").json()
        if deliveries and deliveries[0]["attempts"] >= 1:
            break
        time.sleep(0.2)
    assert deliveries and deliveries[0]["last_status"] == 302, deliveries
    assert deliveries[0]["status"] == "pending"  # retried later, never "delivered"
    assert [r.path for r in receiver.requests if r.path == "/internal"] == []


# -- API4: resource consumption -------------------------------------------------------
def test_rate_limit_is_per_account_and_answers_a_problem(make_gateway, dns, world: World) -> None:
    gw = make_gateway(api__rate_limit_per_minute=3).start()
    world.domain("hospital.test")
    world.domain("school.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    gw.onboard(dns, "School", "school.test")
    hospital, school = Api(gw).login("Ziekenhuis"), Api(gw).login("School")
    stranger = Api(gw)
    stranger.token = "not.a.token"
    for _ in range(5):  # refused tokens do not spend anyone's budget
        problem(stranger.get("/v1/messages"), 401)
    codes = [hospital.get("/v1/messages").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = problem(hospital.get("/v1/messages"), 429)
    assert "too many" in limited["detail"]
    assert school.get("/v1/messages").status_code == 200, "one account's burst limits only itself"


def test_oversized_bodies_are_refused_with_413(make_gateway, dns, world: World) -> None:
    gw = make_gateway(submission__max_message_size=65536).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    big = "x" * 100 + ("y" * 76 + "\r\n") * 1400  # ~110 KB of well-formed text
    body = problem(api.post("/v1/messages", json={**MSG, "text": big}), 413)
    assert "size" in body["detail"].lower()
    mime = (
        "From: alice@hospital.test\r\nTo: dr@clinic.test\r\nSubject: big\r\n\r\n" + big
    ).encode()
    problem(api.post("/v1/messages", content=mime, headers={"Content-Type": "message/rfc822"}), 413)
    assert api.get("/v1/messages").json()["items"] == []


def test_a_chunked_body_over_the_bound_is_cut_off_with_413(make_gateway, dns, world: World) -> None:
    gw = make_gateway(submission__max_message_size=65536).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")

    def endless() -> Iterator[bytes]:  # no Content-Length: chunked, 4 MiB in all
        yield b'{"url": "https://x.hospital.test/'
        for _ in range(64):
            yield b"a" * 65536

    for path, ctype in (
        ("/v1/messages", "application/json"),
        ("/v1/webhooks", "application/json"),
        ("/oauth/token", "application/x-www-form-urlencoded"),
    ):
        r = api.post(path, content=endless(), headers={"Content-Type": ctype})
        assert "limited to" in problem(r, 413)["detail"], path
    assert api.get("/v1/webhooks").json() == []


def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    make_gateway, dns, world: World
) -> None:
    gw = make_gateway(submission__max_message_size=65536).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    api = Api(gw).login("Ziekenhuis")
    raw = socket.create_connection(("127.0.0.1", gw.api_port), timeout=30)
    tls = gw.client_context().wrap_socket(raw)
    try:
        tls.sendall(
            (
                f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api.token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{"
            ).encode()
        )
        # No more body comes, and the connection stays open: only a check of the declared
        # length can answer (a server waiting for the body times this read out).
        tls.settimeout(15)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    except (OSError, ConnectionError) as exc:
        answer = str(exc).encode()
    finally:
        tls.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(body)["status"] == 413


# -- API8: every error is a problem document ---------------------------------------------
def test_every_error_is_a_problem_document_with_a_reason(
    gateway: GatewayProcess, customer: Customer
) -> None:
    api = Api(gateway).login("Ziekenhuis")
    checks = [
        (api.get("/v1/no-such-route"), 404),
        (api.client.put("/v1/messages", headers=api._headers(None)), 405),
        (api.post("/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"}), 422),
        (api.post("/v1/messages", content=b"x", headers={"Content-Type": "text/plain"}), 415),
        (api.post("/v1/webhooks", content=b"[1,2", headers={"Content-Type": "application/json"}), 422),
        (api.post("/v1/webhooks", json=[]), 422),
        (api.get("/v1/messages", params={"limit": "1000"}), 422),
        (api.get("/v1/messages", params={"status": "hacked"}), 422),
        (api.get("/v1/messages", params={"cursor": "%%%"}), 422),
        (api.get("/v1/suppressions/not-an-address"), 422),
        (api.get("/v1/domains/..."), 422),
        (api.client.get("/v1/messages"), 401),
        (api.client.get("/v1/messages", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401),
        (api.client.post("/oauth/token", data={"grant_type": "password"}), 400),
        (api.client.post("/oauth/token", json={"grant_type": "client_credentials"}), 400),
        (api.client.post("/oauth/token", data={"grant_type": "client_credentials"}), 401),
    ]
    for response, status in checks:
        body = problem(response, status)
        assert body["title"] and len(body["detail"]) > 3, body
    # nothing tells a caller more than it needs about the server
    r = api.get("/v1/messages")
    assert "server" not in r.headers and "access-control-allow-origin" not in r.headers

