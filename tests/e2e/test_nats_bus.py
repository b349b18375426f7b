"""The gateway on the NATS JetStream bus (``bus.url = "nats://…"``, pipeline/nats_bus.py):
the real `secumail serve` with its stage queues in a `nats-server -js` of the test's own
(tests/harness/nats.py), its metadata, bodies and claims in its SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import nats
import pytest

from tests.e2e.world import GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.nats import NatsServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def messages_in(url: str, stream: str) -> int:
    """How many jobs the gateway's stream holds (read by a client of the test's own)."""

    async def count() -> int:
        nc = await nats.connect(url)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()

    return asyncio.run(count())


def test_mail_queued_on_nats_survives_kill_9_and_is_delivered_once(
    make_gateway: Callable[..., GatewayProcess],
    dns: AuthoritativeDns,
    world: World,
    nats_server: NatsServer,
) -> None:
    gw = make_gateway(bus__url=nats_server.url).start("submission")  # no stage drains it
    world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("clinic.test")
    ids = [gw.send(who, [f"p{i}@clinic.test", f"q{i}@clinic.test"]) for i in range(3)]
    gw.kill9()
    assert messages_in(nats_server.url, "SECUMAIL") == 3, "queued on NATS, one job each"
    gw.start()  # every stage now, on the same stream
    got = mx.wait_for(3)
    for qid in ids:
        shown = gw.wait_status(qid, {"delivered"})
        assert {r["status"] for r in shown["recipients"]} == {"delivered"}
    assert len(got) == 3
    assert sorted(r for m in mx.received for r in m.rcpt_to) == sorted(
        [f"p{i}@clinic.test" for i in range(3)] + [f"q{i}@clinic.test" for i in range(3)]
    ), "each recipient once"
    deadline = time.monotonic() + 10  # the notify stage may still hold a job
    while messages_in(nats_server.url, "SECUMAIL") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert messages_in(nats_server.url, "SECUMAIL") == 0, "nothing left queued"


@pytest.mark.parametrize(
    ("lines", "told"),
    [
        ('url = "amqp://127.0.0.1:5672"', "bus.url 'amqp://127.0.0.1:5672': 'embedded' or nats://"),
        (
            'url = "nats://127.0.0.1:4"\nstream = "SECUMAIL.>"',
            "bus.stream 'SECUMAIL.>': letters, digits, '_' and '-' only",
        ),
    ],
)
def test_bus_settings_that_cannot_work_are_refused_at_start(
    make_gateway: Callable[..., GatewayProcess], lines: str, told: str
) -> None:
    gw = make_gateway()
    config = gw.config.read_text(encoding="utf-8")
    assert "\n[bus]\n" in config
    gw.config.write_text(config.replace("\n[bus]\n", f"\n[bus]\n{lines}\n"), encoding="utf-8")
    done = gw.cli_process("serve")
    assert done.returncode != 0
    assert told in done.stderr
