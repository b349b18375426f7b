"""`secumail check`: the preflight an application runs before choosing a channel."""

from __future__ import annotations

from tests.e2e.world import GatewayProcess, World
from tests.harness.dns import AuthoritativeDns


def _check(gateway: GatewayProcess, *targets: str) -> list[dict]:
    return gateway.cli("check", *targets, check=False)


def test_check_reports_secure_and_insecure_recipients_with_reasons(
    gateway: GatewayProcess, world: World, dns: AuthoritativeDns
) -> None:
    world.domain("good.test")
    world.domain("plain.test", "no_starttls")
    world.domain("expired.test", "expired")
    world.domain("wrongname.test", "wrong_name")
    dns.add("nomail.test", "MX", "0 .")
    results = {r["target"]: r for r in _check(
        gateway, "dr@good.test", "x@plain.test", "expired.test", "wrongname.test", "nomail.test", "x@nope.test"
    )}
    good = results["dr@good.test"]
    assert (good["secure"], good["method"], good["reasons"]) == (True, "verified", [])
    probe = good["mx"][0]
    assert probe["tls_version"] in ("TLSv1.2", "TLSv1.3") and probe["chain_valid"] is True
    assert probe["certificate"]["name_match"] is True

    plain = results["x@plain.test"]
    assert plain["secure"] is False and plain["method"] is None
    assert any("does not offer STARTTLS" in r for r in plain["reasons"])

    expired = results["expired.test"]["mx"][0]
    assert expired["ok"] is False and expired["result_type"] == "certificate-expired"
    assert expired["certificate"]["expired"] is True, "the probe shows what the server presents"

    wrong = results["wrongname.test"]["mx"][0]
    assert wrong["certificate"]["name_match"] is False
    assert wrong["result_type"] == "certificate-host-mismatch"

    assert any("null MX" in r for r in results["nomail.test"]["reasons"])
    assert any("NXDOMAIN" in r for r in results["x@nope.test"]["reasons"])


def test_check_follows_mta_sts(gateway: GatewayProcess, world: World) -> None:
    world.domain("sts.test")
    world.mta_sts("sts.test", policy_id="p7")
    world.domain("stsbad.test")
    world.mta_sts("stsbad.test", mx=["mail.elsewhere.test"])
    ok, bad = _check(gateway, "sts.test", "stsbad.test")
    assert (ok["secure"], ok["method"]) == (True, "mta-sts")
    assert ok["mta_sts"] == {"mode": "enforce", "policy_id": "p7", "mx": ["*.sts.test"], "failure": None}
    assert ok["mx"][0]["matched"] == "mta-sts id=p7"
    assert bad["secure"] is False
    assert any("not listed in the MTA-STS policy" in r for r in bad["reasons"])


def test_check_human_output_and_exit_status(gateway: GatewayProcess, world: World) -> None:
    world.domain("good.test")
    world.domain("plain.test", "no_starttls")
    out = gateway.cli_process("check", "good.test", "plain.test")
    assert out.returncode == 3, "not every recipient is reachable securely"
    assert "good.test: ✓ secure (verified)" in out.stdout
    assert "plain.test: ✗ NOT secure" in out.stdout
    assert "does not offer STARTTLS" in out.stdout
    only_good = gateway.cli_process("check", "good.test")
    assert only_good.returncode == 0
