"""A first load figure for the embedded relay (issue 2): submit → deliver throughput.

Run by hand: `make bench` or `.venv/bin/python bench/relay_load.py [--messages N]
[--connections C] [--size BYTES]`. Starts the real `secumail serve` against the test
harness (DNS, CA, a TLS sink MX on loopback), submits N messages over C persistent
STARTTLS+AUTH connections with pipelined MAIL/RCPT/DATA, and reports accepted/s,
delivered/s (counted at the sink) and the gateway's CPU time per message. This is not
the Postfix comparison (that is bench work of the performance issue); it is the figure
that tells whether the design is in the right range.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.world import GATEWAY_HOST, GatewayProcess, World
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA

from secumail.net.smtp_client import SmtpConnection


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def message(i: int, size: int) -> bytes:
    head = (
        f"From: Load <load@hospital.test>\r\nTo: r{i}@clinic.test\r\nSubject: load {i}\r\n"
        f"Message-ID: <{i}.{time.time_ns()}@hospital.test>\r\n\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def submitter(gw: GatewayProcess, who, count: int, size: int, offset: int) -> None:
    ctx = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "gateway.crt"))
    conn = await SmtpConnection.open(
        GATEWAY_HOST, "127.0.0.1", gw.submission_port, helo="load.test", tls_context=ctx,
        connect_timeout=10, command_timeout=60,
    )
    token = base64.b64encode(f"\0{who.username}\0{who.password}".encode()).decode()
    reply = await conn.command(f"AUTH PLAIN {token}")
    assert reply.code == 235, reply
    for i in range(count):
        n = offset + i
        result = await conn.send("load@hospital.test", [f"r{n}@clinic.test"], message(n, size))
        assert result.data_reply is not None and result.data_reply.code == 250, result
    await conn.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--size", type=int, default=5000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="secumail-bench-"))
    ca = TestCA(work / "pki")
    mx_port = free_port()
    sinks: list[HarnessMx] = []
    with AuthoritativeDns() as dns:
        def factory(ip: str, **kw) -> HarnessMx:
            server = HarnessMx(ip, mx_port, **kw).start()
            sinks.append(server)
            return server

        for zone in ("hospital.test", "clinic.test"):
            # Realistic zones: negative answers (no AAAA) are cacheable for 5 minutes.
            dns.add(zone, "SOA", "ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300", ttl=300)
        world = World(dns, ca, factory)
        world.domain("hospital.test")
        sink = world.domain("clinic.test")
        gw = GatewayProcess(work / "gw", dns, ca, mx_port, server__log_level="WARNING")
        gw.cli("init")
        gw.start()
        try:
            who = gw.onboard(dns, "Bench", "hospital.test")
            assert gw.proc is not None
            cpu0 = cpu_seconds(gw.proc.pid)
            per = args.messages // args.connections
            total = per * args.connections
            t0 = time.perf_counter()

            async def load() -> None:
                await asyncio.gather(*(
                    submitter(gw, who, per, args.size, c * per) for c in range(args.connections)
                ))

            asyncio.run(load())
            t_accepted = time.perf_counter() - t0
            sink.wait_for(total, timeout=600)
            t_delivered = time.perf_counter() - t0
            cpu = cpu_seconds(gw.proc.pid) - cpu0
            result = {
                "messages": total, "connections": args.connections, "size": args.size,
                "accepted_per_s": round(total / t_accepted, 1),
                "delivered_per_s": round(total / t_delivered, 1),
                "gateway_cpu_ms_per_message": round(cpu * 1000 / total, 2),
                "sink_connections": sink.connections,
            }
            print(json.dumps(result, indent=2))
        finally:
            gw.stop()
            for s in sinks:
                s.stop()


if __name__ == "__main__":
    main()
