"""Fixtures that run the real `secumail serve` against the fake internet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.https import HttpsServer
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA


@pytest.fixture
def sts_port() -> int:
    """The port of the MTA-STS policy server (setting mta_sts.port)."""
    return free_port()


@pytest.fixture
def sts_server(sts_port: int, test_ca: TestCA) -> Iterator[Callable[[], HttpsServer]]:
    """A getter starting, on first use, the HTTPS server that hosts MTA-STS policies."""
    started: list[HttpsServer] = []

    def get() -> HttpsServer:
        if not started:
            started.append(HttpsServer(World.STS_IP, sts_port, test_ca.issue("mta-sts.default.test")).start())
        return started[0]

    yield get
    for server in started:
        server.stop()


@pytest.fixture
def world(
    dns: AuthoritativeDns, test_ca: TestCA, mx_factory: Callable[..., HarnessMx],
    sts_server: Callable[[], HttpsServer],
) -> World:
    return World(dns, test_ca, mx_factory, sts_server)


@pytest.fixture
def make_gateway(
    tmp_path: Path, dns: AuthoritativeDns, test_ca: TestCA, mx_port: int, sts_port: int,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., GatewayProcess]]:
    """`make_gateway(**settings)` → an initialised, not yet started GatewayProcess."""
    made: list[GatewayProcess] = []

    def make(**settings: Any) -> GatewayProcess:
        settings = {"mta_sts__port": sts_port, "mta_sts__timeout": 5.0, **settings}
        gw = GatewayProcess(tmp_path / f"gw{len(made)}", dns, test_ca, mx_port, **settings)
        gw.workdir.mkdir(parents=True, exist_ok=True)
        gw.cli("init")
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- secumail log ({gw.workdir}) ---\n{gw.log()[-20000:]}")


@pytest.fixture
def gateway(make_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """A running gateway with default test settings."""
    return make_gateway().start()


@pytest.fixture
def sender_mx(world: World) -> HarnessMx:
    """The customer's own MX (good TLS): where its delivery notices arrive."""
    return world.domain("hospital.test")


@pytest.fixture
def customer(gateway: GatewayProcess, dns: AuthoritativeDns, sender_mx: HarnessMx) -> Customer:
    """An onboarded customer `Ziekenhuis` with the verified domain hospital.test."""
    return gateway.onboard(dns, "Ziekenhuis", "hospital.test")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
