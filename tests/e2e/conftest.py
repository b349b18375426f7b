"""Fixtures that run the real `secumail serve` against the fake internet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA


@pytest.fixture
def world(dns: AuthoritativeDns, test_ca: TestCA, mx_factory: Callable[..., HarnessMx]) -> World:
    return World(dns, test_ca, mx_factory)


@pytest.fixture
def make_gateway(
    tmp_path: Path, dns: AuthoritativeDns, test_ca: TestCA, mx_port: int,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., GatewayProcess]]:
    """`make_gateway(**settings)` → an initialised, not yet started GatewayProcess."""
    made: list[GatewayProcess] = []

    def make(**settings: Any) -> GatewayProcess:
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
