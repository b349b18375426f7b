"""CA issuing key and evidence key in a PKCS#11 HSM (SoftHSM2): `pki.pkcs11_*` settings."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.world import GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.softhsm import softhsm_token


def test_smime_and_evidence_are_signed_by_keys_that_never_leave_the_hsm(
    make_gateway: Callable[..., GatewayProcess],
    dns: AuthoritativeDns,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = softhsm_token()
    monkeypatch.setenv("SECUMAIL_PKCS11_PIN", token.pin)
    gw = make_gateway(pki__pkcs11_module=token.module, pki__pkcs11_token=token.label).start()
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    gw.cli("account", "update", "Ziekenhuis", "--smime", "on")
    gw.stop()
    gw.start()
    mx = world.domain("clinic.test")
    qid = gw.send(who, ["x@clinic.test"])
    gw.wait_status(qid, {"delivered"})
    # No private key of the CA's issuing key or the evidence key exists as a file.
    assert not (gw.data_dir / "pki" / "ca" / "issuing-key.pem").exists()
    assert not (gw.data_dir / "keys" / "evidence.key").exists()
    (tmp_path / "root.pem").write_text(gw.cli("ca", "export-root")["root_pem"])
    (tmp_path / "signed.eml").write_bytes(mx.wait_for(1)[0].data)
    ok = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-in",
            str(tmp_path / "signed.eml"),
            "-CAfile",
            str(tmp_path / "root.pem"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    exported = gw.cli("evidence", "export", qid)
    (tmp_path / "evidence.json").write_text(json.dumps(exported))
    (tmp_path / "key.jwk").write_text(json.dumps(exported["public_key"]))
    verified = gw.cli_process(
        "evidence", "verify", str(tmp_path / "evidence.json"), "--key", str(tmp_path / "key.jwk")
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_wrong_pin_stops_the_gateway_with_a_clear_error(
    make_gateway: Callable[..., GatewayProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = softhsm_token()
    monkeypatch.setenv("SECUMAIL_PKCS11_PIN", token.pin)
    gw = make_gateway(pki__pkcs11_module=token.module, pki__pkcs11_token=token.label)
    monkeypatch.setenv("SECUMAIL_PKCS11_PIN", "000000-wrong")
    with pytest.raises(AssertionError, match="exited early"):
        gw.start()
    assert "wrong PIN" in gw.log()
