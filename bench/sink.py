"""A fast TLS SMTP sink for the benchmark: the recipient MX both systems deliver to.

Run as its own process (`python bench/sink.py CONFIG_JSON`) so its CPU is measured apart
from the systems under test and the load generator. It speaks what a sending MTA needs:
EHLO, STARTTLS, PIPELINING, AUTH PLAIN (accepted blindly, for its own speed check), MAIL,
RCPT, DATA, RSET, NOOP, QUIT, any number of messages per connection. It is an
`asyncio.Protocol` over uvloop working on byte buffers (no per-line coroutine), so it
stays far from being the bottleneck (see `compare.py sinkcheck`).

Every message carries `X-Bench-Id: <tag>-<n>` and `X-Bench-Submitted: <time.time()>`
(stamped by the load generator just before it sent the message). The sink keeps, per
tag: the set of ids received (duplicates counted), first/last delivery time, the
submit→delivered latency of each message, the number of DKIM-Signature headers seen,
and the first message (a sample for signature checks).

Control: one JSON command per line on stdin, one JSON answer per line on stdout:
  {"cmd": "stats", "tag": T}   counts, times, latency percentiles for tag T
                               ("all": true adds every latency, in ms)
  {"cmd": "ids", "tag": T, "path": P}  write the ids received for T to P (one per line)
  {"cmd": "sample", "tag": T}  the first message of T (latin-1 text)
  {"cmd": "forget", "tag": T}  drop what is kept for T
  {"cmd": "down"} / {"cmd": "up"}  stop listening and drop every connection (the MX is
                                 down) / listen again on the same address
  {"cmd": "quickack", "on": B} ACK a partial message body at once (TCP_QUICKACK)
  {"cmd": "cpu"}               this process's CPU seconds

Delayed ACKs: Linux delays the ACK of received data up to 40 ms when it expects to send
a reply soon. Postfix's tlsproxy writes a message in several small TLS records; with
Nagle on its side, the end of the message then waits for the sink's delayed ACK: ~40 ms
per message at low load (fewer, larger segments at high load). With `quickack` on, the
sink ACKs a partial body at once: no stall, more packets. compare.py uses the default
(delayed ACKs) for throughput and quickack for latency: Postfix's better case for each.
  {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field

ID_HEADER = b"\r\nX-Bench-Id: "
TS_HEADER = b"\r\nX-Bench-Submitted: "
END = b"\r\n.\r\n"


@dataclass
class TagStats:
    ids: set[int] = field(default_factory=set)
    duplicates: int = 0
    first: float = 0.0
    last: float = 0.0
    latencies: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # when each latency was measured
    dkim: dict[int, int] = field(default_factory=dict)
    sample: bytes = b""
    bytes: int = 0


class Sink:
    def __init__(self, host: str, port: int, hostname: str, cert: str, key: str,
                 quickack: bool = True) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.quickack = quickack
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert, key)
        self.tags: dict[str, TagStats] = {}
        self.untagged = 0
        self.connections = 0
        self.sessions: set[Session] = set()
        self.server: asyncio.AbstractServer | None = None

    async def listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Session(self), sock=sock)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()

    def record(self, data: bytes | bytearray) -> None:
        now = time.time()
        head_end = data.find(b"\r\n\r\n")
        head = b"\r\n" + bytes(data[: head_end + 2 if head_end >= 0 else len(data)])
        i = head.find(ID_HEADER)
        if i < 0:
            self.untagged += 1
            return
        i += len(ID_HEADER)
        tag, _, n = head[i:head.find(b"\r\n", i)].rpartition(b"-")
        tag, n = tag.decode(), int(n)
        st = self.tags.get(tag)
        if st is None:
            st = self.tags[tag] = TagStats(first=now)
            st.sample = bytes(data)
        if n in st.ids:
            st.duplicates += 1
        else:
            st.ids.add(n)
        st.last = now
        st.bytes += len(data)
        i = head.find(TS_HEADER)
        if i >= 0:
            i += len(TS_HEADER)
            st.latencies.append(now - float(head[i:head.find(b"\r\n", i)]))
            st.arrivals.append(now)
        k = head.count(b"\r\nDKIM-Signature:")
        st.dkim[k] = st.dkim.get(k, 0) + 1

    def stats(self, tag: str, want_all: bool = False) -> dict:
        st = self.tags.get(tag)
        if st is None:
            return {"count": 0, "duplicates": 0, "first": None, "last": None, "latency": None,
                    "dkim_signatures": {}, "bytes": 0, "connections": self.connections}
        lat = sorted(st.latencies)
        # The five slowest, with when they arrived (seconds after the first): a tail that
        # clusters in time is a stall (of a system, the disk or the harness), not a spread.
        worst = sorted(zip(st.latencies, st.arrivals, strict=True), reverse=True)[:5]
        return {
            "count": len(st.ids), "duplicates": st.duplicates, "first": st.first,
            "last": st.last, "latency": percentiles(lat), "dkim_signatures": st.dkim,
            "worst": [[round(v * 1000, 1), round(at - st.first, 2)] for v, at in worst],
            "latencies_ms": [round(v * 1000, 2) for v in st.latencies] if want_all else None,
            "bytes": st.bytes, "connections": self.connections, "untagged": self.untagged,
        }


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None

    def pick(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"n": len(values), "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "max": values[-1], "mean": sum(values) / len(values)}


class Session(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.in_data = False
        self.scan = 0
        self.tls = False
        self.upgrading = False
        self.upgrade_task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sock = transport.get_extra_info("socket")
        self.sink.connections += 1
        self.sink.sessions.add(self)
        transport.write(f"220 {self.sink.hostname} ESMTP bench sink\r\n".encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.sessions.discard(self)
        if not self.upgrading:
            self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.upgrading:
            return  # RFC 3207: nothing may follow STARTTLS in clear
        self.buf += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                i = self.buf.find(END, max(0, self.scan - 4))
                if i < 0:
                    self.scan = len(self.buf)
                    if self.sink.quickack:  # ACK this part of the body now (see the module doc)
                        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    break
                body = self.buf[:i + 2]
                del self.buf[:i + 5]
                self.in_data, self.scan = False, 0
                self.sink.record(body)
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            j = self.buf.find(b"\n")
            if j < 0:
                break
            line = bytes(self.buf[:j]).rstrip(b"\r")
            del self.buf[:j + 1]
            verb = line[:4].upper()
            if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data, self.scan = True, 0
                if self.buf.startswith(b".\r\n"):  # an empty message
                    self.buf[:0] = b"\r\n"
            elif verb in (b"EHLO", b"HELO"):
                caps = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 104857600",
                        "AUTH PLAIN"]
                if not self.tls:
                    caps.insert(0, "STARTTLS")
                lines = [self.sink.hostname, *caps]
                out.append("".join(
                    f"250{' ' if i == len(lines) - 1 else '-'}{t}\r\n" for i, t in enumerate(lines)
                ).encode())
            elif verb == b"AUTH":
                out.append(b"235 2.7.0 Authentication successful\r\n")
            elif verb == b"STAR" and not self.tls:
                self._write(out)
                self.transport.write(b"220 2.0.0 Ready to start TLS\r\n")  # type: ignore[union-attr]
                self.buf.clear()
                self.upgrading = True
                self.upgrade_task = asyncio.ensure_future(self._starttls())
                return
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self._write(out)
                self.transport.close()  # type: ignore[union-attr]
                return
            else:
                out.append(b"500 5.5.2 Command unrecognized\r\n")
        self._write(out)

    def _write(self, out: list[bytes]) -> None:
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    async def _starttls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, self.sink.ctx, server_side=True)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError, ConnectionError):
            self.upgrading = False
            if self.transport is not None:
                self.transport.abort()
            return
        self.transport = transport  # type: ignore[assignment]
        self.sink.sessions.add(self)
        self.tls, self.upgrading = True, False


async def control(sink: Sink) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    while True:
        line = await reader.readline()
        if not line:
            return
        req = json.loads(line)
        cmd = req["cmd"]
        answer: object = {"ok": True}
        if cmd == "stats":
            answer = sink.stats(req["tag"], bool(req.get("all")))
        elif cmd == "ids":
            st = sink.tags.get(req["tag"])
            with open(req["path"], "w") as f:
                f.writelines(f"{n}\n" for n in sorted(st.ids if st else ()))
        elif cmd == "sample":
            st = sink.tags.get(req["tag"])
            answer = {"message": (st.sample if st else b"").decode("latin-1")}
        elif cmd == "forget":
            sink.tags.pop(req["tag"], None)
        elif cmd == "down":
            await sink.down()
        elif cmd == "up":
            await sink.listen()
        elif cmd == "quickack":
            sink.quickack = bool(req["on"])
        elif cmd == "cpu":
            t = os.times()
            answer = {"cpu": t.user + t.system}
        elif cmd == "quit":
            out.write(json.dumps({"ok": True}) + "\n")
            out.flush()
            return
        out.write(json.dumps(answer) + "\n")
        out.flush()


async def amain(cfg: dict) -> None:
    sink = Sink(cfg["host"], cfg["port"], cfg["hostname"], cfg["cert"], cfg["key"],
                cfg.get("quickack", True))
    await sink.listen()
    await control(sink)
    await sink.down()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(amain(cfg))


if __name__ == "__main__":
    main()
