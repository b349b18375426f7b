"""MTA-STS (RFC 8461) in delivery: enforce binds, testing falls through, the cache holds."""

from __future__ import annotations

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns


def test_enforce_policy_delivers_to_a_listed_mx_and_records_the_policy(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("sts.test")
    server = world.mta_sts("sts.test", policy_id="pol1")
    qid = gateway.send(customer, ["x@sts.test"])
    mx.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    attempt = shown["attempts"][-1]
    assert attempt["route_method"] == "mta-sts"
    assert attempt["policy"] == "mta-sts id=pol1"
    fetched = [r for r in server.requests if r.path == "/.well-known/mta-sts.txt"]
    assert fetched and fetched[0].sni == "mta-sts.sts.test", "policy fetched over verified HTTPS"


def test_enforce_policy_refuses_an_mx_it_does_not_list(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("sts.test")  # mx10.sts.test: good TLS, but not in the policy
    world.mta_sts("sts.test", mx=["mail.elsewhere.test"])
    qid = gateway.send(customer, ["x@sts.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    assert "not listed in the MTA-STS policy" in shown["recipients"][0]["reply"]
    assert mx.connections == 0, "an unlisted MX is not even contacted"
    rejected = [a for a in shown["attempts"] if a["outcome"] == "rejected"]
    assert rejected and rejected[0]["mx"] == "mx10.sts.test", "the decision is on record"


def test_testing_mode_falls_through_to_verified_tls(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("trial.test")
    world.mta_sts("trial.test", mode="testing", mx=["mail.elsewhere.test"])
    qid = gateway.send(customer, ["x@trial.test"])
    mx.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    assert shown["attempts"][-1]["route_method"] == "verified"


def test_policy_behind_an_invalid_certificate_is_not_used(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("badpki.test")
    world.mta_sts("badpki.test", mx=["mail.elsewhere.test"], cert=world.ca.issue("mta-sts.other.test"))
    qid = gateway.send(customer, ["x@badpki.test"])
    mx.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    assert shown["attempts"][-1]["route_method"] == "verified", "no valid policy: the baseline applies"


def test_cached_enforce_policy_survives_restart_and_applies_when_the_fetch_fails(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    world.domain("sts.test")
    server = world.mta_sts("sts.test", policy_id="pol1")
    gateway.wait_status(gateway.send(customer, ["a@sts.test"]), {"delivered"})
    # The domain's DNS is then hijacked: a new MX, a new policy id, and the policy host
    # serves errors. The cached policy (max_age one day) must still bind.
    dns.remove("sts.test", "MX")
    dns.add("sts.test", "MX", "10 mx.evil.test.")
    world.mx("mx.evil.test")
    dns.remove("_mta-sts.sts.test", "TXT")
    dns.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=pol2"')
    server.set_route("/.well-known/mta-sts.txt", 500, body="down", host="mta-sts.sts.test")
    gateway.stop()
    gateway.start()
    qid = gateway.send(customer, ["b@sts.test"])
    shown = gateway.wait_status(qid, {"refused_insecure"})
    reply = shown["recipients"][0]["reply"]
    assert "mx.evil.test: not listed in the MTA-STS policy" in reply
    assert "cached" in gateway.log() or "MTA-STS policy of sts.test" in reply
