"""The daily health check of a customer domain, through the real `secumail serve`: its
report (`secumail domain show`, `GET /v1/domains/{name}/health`) and the
`domain_dns_error` alert — a deleted DKIM record is told once (webhook and mail), and once
more when it is published again, however many checks run in between."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.api_client import Api
from tests.e2e.world import Customer, GatewayProcess, World, _txt
from tests.harness.dns import AuthoritativeDns
from tests.harness.dnssec import SignedZoneDns
from tests.harness.mx import HarnessMx
from tests.harness.unbound import ValidatingResolver

GATEWAY = "gw.secumail.test"


def publish_recommended(dns: AuthoritativeDns, domain: str) -> None:
    """What `domain records` recommends besides the required records: SPF naming the
    gateway, DMARC, TLS reporting for the domain's own mail."""
    dns.add(domain, "TXT", f'"v=spf1 a:{GATEWAY} ~all"')
    dns.add(f"_dmarc.{domain}", "TXT", f'"v=DMARC1; p=reject; rua=mailto:dmarc@{domain}"')
    dns.add(f"_smtp._tls.{domain}", "TXT", f'"v=TLSRPTv1; rua=mailto:tls-reports@{domain}"')


def dkim_records(gw: GatewayProcess, domain: str) -> list[dict[str, Any]]:
    return [r for r in gw.cli("domain", "records", domain)["records"] if "._domainkey." in r["name"]]


def poll(what: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    value = what()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: {json.dumps(value, indent=1, default=str)[:4000]}")
        time.sleep(0.2)
        value = what()
    return value


def checks_of(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in report["checks"]:
        out.setdefault(c["id"], []).append(c)
    return out


# -- a good setup: every check passes -------------------------------------------------
ZONE = "dnssec.test"


def test_a_well_set_up_domain_shows_all_good(
    make_gateway: Callable[..., GatewayProcess],
    signed_dns: SignedZoneDns,
    validating_resolver: ValidatingResolver,
    test_ca: Any,
    mx_factory: Callable[..., HarnessMx],
    sts_server: Any,
    mx_port: int,
) -> None:
    # The customer's zone is DNSSEC-signed; its MX has DANE, MTA-STS (enforce) and TLSRPT.
    world = World(signed_dns, test_ca, mx_factory, sts_server)
    gw = make_gateway(dns__nameservers=[validating_resolver.address]).start()
    domain = f"clinic.{ZONE}"
    cert = world.ca.self_signed(f"mx10.{domain}")
    world.domain(domain, cert=cert)
    signed_dns.add(f"_{mx_port}._tcp.mx10.{domain}", "TLSA", f"3 1 1 {cert.spki_sha256}")
    world.mta_sts(domain)
    publish_recommended(signed_dns, domain)
    gw.onboard(signed_dns, "Kliniek", domain)

    shown = gw.cli("domain", "show", domain, "--now")
    report = shown["health"]
    not_ok = [c for c in report["checks"] if c["status"] != "ok"]
    assert not_ok == [], not_ok
    assert report["status"] == "ok"
    ids = checks_of(report)
    for wanted in (
        "secumail_ownership", "auth_dkim_exist", "auth_spf_exist", "auth_spf_gateway",
        "auth_spf_policy", "auth_dmarc_exist", "auth_dmarc_policy", "auth_dmarc_alignment",
        "mx_exist", "dnssec_mx_exist", "starttls_tls_available", "starttls_tls_version",
        "starttls_cert_domain", "starttls_dane_exist", "starttls_dane_valid", "mta_sts",
        "tlsrpt_exist",
    ):
        assert wanted in ids, (wanted, sorted(ids))
    assert len(ids["auth_dkim_exist"]) == 2  # RSA and Ed25519

    # The human form, as the operator reads it (the stored report, no new probe).
    human = gw.cli_process("domain", "show", domain)
    assert human.returncode == 0, human.stderr
    assert f"health of {domain}: ok" in human.stdout
    assert "✗" not in human.stdout and "DANE valid" in human.stdout

    api = Api(gw).login("Kliniek")
    r = api.get(f"/v1/domains/{domain}/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["alert_open"] is False
    assert body["checked_at"] == report["checked_at"]  # served from the kept report


# -- a record that breaks: told once, and once more when fixed ------------------------
def _hook_posts(receiver: Any) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests if r.method == "POST" and r.path == "/hooks"]


def _alert_mails(mx: HarnessMx) -> list[email.message.EmailMessage]:
    out = []
    for m in mx.received:
        if m.rcpt_to == ["ict@hospital.test"]:
            out.append(email.message_from_bytes(m.data, policy=email.policy.default))
    return out


def test_a_deleted_dkim_record_raises_its_alert_exactly_once_and_once_when_fixed(
    make_gateway: Callable[..., GatewayProcess],
    dns: AuthoritativeDns,
    world: World,
    sts_port: int,
    sts_server: Any,
    sender_mx: HarnessMx,
) -> None:
    gw = make_gateway(domains__health_interval=1.0, api__webhooks_port=sts_port).start()
    publish_recommended(dns, "hospital.test")
    customer: Customer = gw.onboard(
        dns, "Ziekenhuis", "hospital.test", locale="nl", notify="ict@hospital.test"
    )
    # Short TTLs, so the gateway's resolver sees the change at the next check.
    rsa = next(r for r in dkim_records(gw, customer.domain) if "k=rsa" in r["value"])
    dns.remove(rsa["name"], "TXT")
    dns.add(rsa["name"], "TXT", _txt(rsa["value"]), ttl=1)

    receiver = sts_server()
    dns.add("hooks.hospital.test", "A", World.STS_IP)
    receiver.add_certificate("hooks.hospital.test", world.ca.issue("hooks.hospital.test"))
    receiver.set_route("/hooks", 200, {"Content-Type": "text/plain"}, "ok", host="hooks.hospital.test")
    api = Api(gw).login("Ziekenhuis")
    hook = api.post(
        "/v1/webhooks",
        json={"url": "https://hooks.hospital.test/hooks", "events": ["domain_dns_error"]},
    )
    assert hook.status_code == 201, hook.text

    def report() -> dict[str, Any]:
        return gw.cli("domain", "show", "hospital.test", check=False)["health"]

    first = poll(report, lambda r: r["checked_at"] > 0, 10, "no report")
    assert [c for c in first["checks"] if c["part"] == "sending" and c["status"] != "ok"] == []

    dns.remove(rsa["name"], "TXT")  # a DNS change deletes the DKIM record
    posts = poll(lambda: _hook_posts(receiver), lambda p: len(p) >= 1, 30, "no webhook")
    raised = posts[0]
    assert raised["type"] == "domain_dns_error"
    assert raised["data"]["state"] == "raised" and raised["data"]["about"] == "hospital.test"
    assert [p["record"] for p in raised["data"]["problems"]] == [rsa["name"]]
    mails = poll(lambda: _alert_mails(sender_mx), lambda m: len(m) >= 1, 30, "no alert mail")
    assert mails[0]["Subject"] == "1 probleem met de DNS-records van hospital.test"
    text = mails[0].get_content()
    assert rsa["name"] in text and "Publiceer het opnieuw" in text
    assert mails[0]["Auto-Submitted"] == "auto-generated"

    # The report says what is wrong; the API serves it with the alert open.
    broken = api.get("/v1/domains/hospital.test/health")
    assert broken.status_code == 200, broken.text
    body = broken.json()
    assert body["status"] == "fail" and body["alert_open"] is True
    (dkim_fail,) = [c for c in body["checks"] if c["alerting"]]
    assert dkim_fail["id"] == "auth_dkim_exist" and dkim_fail["record"] == rsa["name"]
    assert "Publish it again" in dkim_fail["advice"]["en"] and dkim_fail["advice"]["nl"]

    shown = gw.cli("domain", "show", "hospital.test", check=False)
    assert shown["alert_open"] is True
    human = gw.cli_process("domain", "show", "hospital.test")
    assert human.returncode == 2, human.stderr  # a broken record: scripts notice
    assert f"✗ DKIM-sleutel gepubliceerd ({rsa['name']})" in human.stdout  # the account's language
    assert "[alert]" in human.stdout and "Publiceer het opnieuw" in human.stdout

    # More checks run while it stays broken: nobody is told again.
    seen = broken.json()["checked_at"]
    for _ in range(3):
        seen = poll(report, lambda r, s=seen: r["checked_at"] > s, 15, "no new check")["checked_at"]
    assert len(_hook_posts(receiver)) == 1
    assert len(_alert_mails(sender_mx)) == 1

    dns.add(rsa["name"], "TXT", _txt(rsa["value"]), ttl=1)  # published again
    posts = poll(lambda: _hook_posts(receiver), lambda p: len(p) >= 2, 30, "no resolved webhook")
    assert posts[1]["data"]["state"] == "resolved" and posts[1]["data"]["about"] == "hospital.test"
    mails = poll(lambda: _alert_mails(sender_mx), lambda m: len(m) >= 2, 30, "no resolved mail")
    assert mails[1]["Subject"] == "De DNS-records van hospital.test zijn weer in orde"

    seen = report()["checked_at"]
    for _ in range(3):
        seen = poll(report, lambda r, s=seen: r["checked_at"] > s, 15, "no new check")["checked_at"]
    assert len(_hook_posts(receiver)) == 2
    assert len(_alert_mails(sender_mx)) == 2
    assert api.get("/v1/domains/hospital.test/health").json()["alert_open"] is False
