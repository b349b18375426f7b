"""Fixtures for the SMTP attack modules (imported by each: `from tests.security.site import *`):
the real `secumail serve` (tests/e2e), one gateway per
module: the harness fixtures of tests/conftest.py are re-declared here with module scope,
and a module chooses its gateway settings with a `gateway_settings` fixture.

`site`: the gateway with two tenants, A (`Ziekenhuis`, hospital.test) and B (`Bank`,
bank.test), each with its own verified domain, and two recipient domains with good MX
servers, clinic.test and other.test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA


@pytest.fixture(scope="module")
def dns() -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns() as server:
        yield server


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def mx_factory(mx_port: int) -> Iterator[Callable[..., HarnessMx]]:
    started: list[HarnessMx] = []

    def make(ip: str, **kwargs: Any) -> HarnessMx:
        server = HarnessMx(ip, mx_port, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def world(dns: AuthoritativeDns, test_ca: TestCA, mx_factory: Callable[..., HarnessMx]) -> World:
    return World(dns, test_ca, mx_factory)


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    """Settings of the module's gateway (`section__key=value`); override in a module."""
    return {}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, dns: AuthoritativeDns, test_ca: TestCA,
    mx_port: int, gateway_settings: dict[str, Any], request: pytest.FixtureRequest,
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), dns, test_ca, mx_port, **gateway_settings)
    gw.cli("init")
    failed_before = request.session.testsfailed
    try:
        yield gw.start()
    finally:
        gw.stop()
        if request.session.testsfailed > failed_before:
            print(f"--- secumail log ({gw.workdir}) ---\n{gw.log()[-20000:]}")


@dataclass
class Site:
    gw: GatewayProcess
    a: Customer  # tenant A: hospital.test
    b: Customer  # tenant B: bank.test
    clinic: HarnessMx  # a recipient domain
    other: HarnessMx  # another recipient domain ("the other host" of relay tricks)
    own: dict[str, HarnessMx]  # the tenants' own MX (delivery notices land there)


@pytest.fixture(scope="module")
def site(gateway: GatewayProcess, dns: AuthoritativeDns, world: World) -> Site:
    own = {d: world.domain(d) for d in ("hospital.test", "bank.test")}
    a = gateway.onboard(dns, "Ziekenhuis", "hospital.test")
    b = gateway.onboard(dns, "Bank", "bank.test")
    return Site(gateway, a, b, world.domain("clinic.test"), world.domain("other.test"), own)
