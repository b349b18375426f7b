"""Fixtures for the fake internet (tests/harness), shared by every test directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.dnssec import SignedZoneDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA
from tests.harness.scanners import Clamd, Rspamd
from tests.harness.unbound import ValidatingResolver


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One private CA for the session; its ``ca_file`` is the clients' trust anchor."""
    return TestCA(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def dns() -> Iterator[AuthoritativeDns]:
    """A fresh authoritative DNS server on 127.0.0.1 (UDP and TCP on ``dns.port``)."""
    with AuthoritativeDns() as server:
        yield server


@pytest.fixture
def mx_port() -> int:
    """The delivery port shared by all harness MX servers of one test."""
    return free_port()


@pytest.fixture
def mx_factory(mx_port: int) -> Iterator[Callable[..., HarnessMx]]:
    """``mx_factory("127.0.0.2", cert=..., ...)``: a started HarnessMx on ``mx_port``."""
    started: list[HarnessMx] = []

    def make(ip: str, **kwargs: Any) -> HarnessMx:
        server = HarnessMx(ip, mx_port, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def signed_dns() -> Iterator[SignedZoneDns]:
    """A fresh authoritative server whose ``dnssec.test.`` zone is signed (see its doc).

    Names outside the signed zones (``example.test``) are answered unsigned, as by ``dns``.
    """
    with SignedZoneDns() as server:
        yield server


@pytest.fixture
def validating_resolver(signed_dns: SignedZoneDns) -> Iterator[ValidatingResolver]:
    """Unbound on 127.0.0.1 validating ``signed_dns`` (``validating_resolver.address``).

    It trusts the signed zone's DS, stubs ``test.`` and every signed-DNS zone to it, and
    flushes its caches whenever ``signed_dns`` adds a zone or breaks or heals signatures.
    """
    with ValidatingResolver.in_front_of(signed_dns) as resolver:
        yield resolver


@pytest.fixture(scope="session")
def clamd() -> Iterator[Clamd]:
    """One real clamd for the session (EICAR signature only; Unix socket and TCP)."""
    with Clamd() as server:
        yield server


@pytest.fixture(scope="session")
def rspamd() -> Iterator[Rspamd]:
    """One real rspamd for the session (Debian's rules; GTUBE is spam)."""
    with Rspamd() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `e2e` marker on every test that starts the real `secumail serve` (through the
    `gateway`, `make_gateway` or `site` fixtures): `pytest -m "not e2e"` is the fast set."""
    for item in items:
        if {"gateway", "make_gateway", "site"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
