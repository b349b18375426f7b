"""Property-based API tests with schemathesis against the served OpenAPI schema:
no 500 for any generated input, and every response conforms to the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.api_client import Api
from tests.e2e.world import Customer, GatewayProcess, World


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    make_gateway, dns, world: World, tmp_path: Path
) -> None:
    # Plain HTTP on loopback (an operator option) so the fuzzer needs no certificate.
    gw: GatewayProcess = make_gateway(api__plain_http=True).start()
    world.domain("hospital.test")
    who: Customer = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    assert who
    api = Api(gw)
    api.base = f"http://127.0.0.1:{gw.api_port}"
    client_id, secret = api.credential("Ziekenhuis")
    token = httpx.post(f"{api.base}/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret)).json()["access_token"]
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a test dependency"
    out = subprocess.run(
        [st, "run", f"{api.base}/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,"
         "status_code_conformance",
         "--max-examples", "25", "--generation-deterministic", "--request-timeout", "20",
         "--exclude-path", "/oauth/token", "--phases", "examples,coverage,fuzzing"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
