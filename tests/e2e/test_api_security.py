"""Tokens and tenants: every attack answers 401 with a reason; another account's ids 404."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.e2e.api_client import Api, problem
from tests.e2e.world import Customer, GatewayProcess, World

MSG = {"from": "alice@hospital.test", "to": ["dr@clinic.test"], "subject": "Lab", "text": "x"}


@pytest.fixture
def two_tenants(gateway: GatewayProcess, customer: Customer, dns, world: World) -> tuple[Api, Api]:
    world.domain("school.test")
    gateway.onboard(dns, "School", "school.test")
    return Api(gateway).login("Ziekenhuis"), Api(gateway).login("School")


def test_token_attacks_are_refused_with_a_reason(
    two_tenants: tuple[Api, Api], gateway: GatewayProcess
) -> None:
    hospital, _school = two_tenants
    real = jwt.decode(hospital.token, options={"verify_signature": False})
    raw = Api(gateway)

    def attempt(token: str) -> str:
        raw.token = token
        return problem(raw.get("/v1/messages"), 401)["detail"]

    # alg none
    unsigned = jwt.encode(real, key=None, algorithm="none")
    assert "alg none" in attempt(unsigned)
    # HS256 keyed with our public key (the classic RS/HS confusion)
    key_pem = (gateway.data_dir / "keys" / "api-token.key").read_bytes()
    private = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public_raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    confused = jwt.encode(real, public_raw, algorithm="HS256")
    assert "algorithm not allowed" in attempt(confused)
    # expired, signed with the real key
    assert "expired" in attempt(
        jwt.encode({**real, "exp": int(time.time()) - 10}, private, algorithm="EdDSA")
    )
    # wrong audience, signed with the real key
    assert "audience" in attempt(
        jwt.encode({**real, "aud": "someone-else"}, private, algorithm="EdDSA")
    )
    # a key nobody trusts
    stranger = ed25519.Ed25519PrivateKey.generate()
    assert "invalid token" in attempt(jwt.encode(real, stranger, algorithm="EdDSA"))
    # garbage and missing
    assert "malformed" in attempt("not.a.token")
    raw.token = None
    problem(raw.get("/v1/messages"), 401)


def test_revoked_credentials_tokens_stop_working(
    gateway: GatewayProcess, customer: Customer
) -> None:
    api = Api(gateway).login("Ziekenhuis")
    assert api.get("/v1/messages").status_code == 200
    creds = [c for c in gateway.cli("credential", "list") if c["kind"] == "api"]
    gateway.cli("credential", "revoke", creds[0]["id"])
    assert "revoked" in problem(api.get("/v1/messages"), 401)["detail"]


def test_another_accounts_objects_are_not_found(
    two_tenants: tuple[Api, Api], world: World, gateway: GatewayProcess, dns
) -> None:
    hospital, school = two_tenants
    world.domain("clinic.test")
    dns.add("hooks.hospital.test", "A", "127.0.0.251")
    sent = hospital.post("/v1/messages", json=MSG).json()["id"]
    gateway.wait_status(sent, {"delivered"})
    hook = hospital.post(
        "/v1/webhooks", json={"url": "https://hooks.hospital.test/x", "events": ["delivered"]}
    )
    assert hook.status_code == 201, hook.text
    hospital.post("/v1/suppressions", json={"address": "gone@clinic.test"})
    for path in (
        f"/v1/messages/{sent}",
        f"/v1/messages/{sent}/evidence/dr@clinic.test",
        "/v1/domains/hospital.test",
        "/v1/domains/hospital.test/health",
        f"/v1/webhooks/{hook.json()['id']}/deliveries",
        "/v1/suppressions/gone@clinic.test",
    ):
        assert hospital.get(path).status_code == 200, path
        problem(school.get(path), 404)
    problem(school.post("/v1/domains/hospital.test/verify"), 404)
    problem(school.get("/v1/domains/hospital.test/health?refresh=true"), 404)
    problem(school.delete(f"/v1/webhooks/{hook.json()['id']}"), 404)
    problem(school.delete("/v1/suppressions/gone@clinic.test"), 404)
    problem(school.delete("/v1/domains/hospital.test"), 404)
    assert school.get("/v1/messages").json()["items"] == []
    assert [d["name"] for d in school.get("/v1/domains").json()] == ["school.test"]
    taken = problem(school.post("/v1/domains", json={"name": "hospital.test"}), 409)
    assert taken["field"] == "name"


def test_external_oidc_tokens_are_accepted_when_configured(
    make_gateway, dns, world: World, sts_port: int, sts_server
) -> None:
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(idp_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    https = sts_server()
    dns.add("idp.test", "A", World.STS_IP)
    https.add_certificate("idp.test", world.ca.issue("idp.test"))
    https.set_route(
        "/jwks",
        200,
        {"Content-Type": "application/json"},
        json.dumps({"keys": [jwk]}),
        host="idp.test",
    )
    gw = make_gateway(
        api__oidc={
            "issuer": "https://idp.test/realms/zorg",
            "audience": "secumail",
            "jwks_url": f"https://idp.test:{sts_port}/jwks",
            "account_claim": "secumail_account",
        },
    ).start()
    world.domain("hospital.test")
    gw.onboard(dns, "Ziekenhuis", "hospital.test")
    now = int(time.time())
    claims = {
        "iss": "https://idp.test/realms/zorg",
        "aud": "secumail",
        "sub": "svc-portal",
        "iat": now,
        "exp": now + 300,
        "scope": "messages:read",
        "secumail_account": "Ziekenhuis",
    }
    api = Api(gw)
    api.token = jwt.encode(claims, idp_key, algorithm="RS256", headers={"kid": "k1"})
    assert api.get("/v1/messages").status_code == 200
    problem(api.post("/v1/messages", json=MSG), 403)  # the scope claim gives read only
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api.token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
    assert "invalid token" in problem(api.get("/v1/messages"), 401)["detail"]
    api.token = jwt.encode(
        {**claims, "aud": "else"}, idp_key, algorithm="RS256", headers={"kid": "k1"}
    )
    assert "audience" in problem(api.get("/v1/messages"), 401)["detail"]
    api.token = jwt.encode(
        {**claims, "secumail_account": "Nobody"}, idp_key, algorithm="RS256", headers={"kid": "k1"}
    )
    assert "does not exist" in problem(api.get("/v1/messages"), 401)["detail"]
