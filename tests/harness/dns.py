"""An authoritative DNS server on loopback for test zones (UDP and TCP, one port).

It answers for every name from records set at run time with `add`/`remove`/`clear`,
with the AA bit set and RFC 1034/2308 semantics: an answer, NODATA (NOERROR, empty
answer, SOA in authority), or NXDOMAIN (SOA in authority); a CNAME is returned and
chased inside the data (RFC 1034 §4.3.2); an empty non-terminal exists. A UDP answer
larger than the client's payload size (512, or its EDNS size) is sent empty with TC
set so the client retries over TCP (RFC 1035 §4.2.1, RFC 7766).

Faults per name: `fail` (SERVFAIL, REFUSED, ...), `delay` (slow or timed-out answers),
`heal`. `queries` logs every (qname, qtype) received, e.g. ``("example.test", "MX")``.

The server runs on its own asyncio loop in a background thread. Negative answers carry
a zero TTL so a caching resolver in front never remembers an absence across a test.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.harness import check_loopback
from tests.harness.server import LoopServer

SOA_RDATA = "ns.harness.test. hostmaster.harness.test. 1 3600 600 86400 0"
MAX_CHASE = 8  # CNAME links followed before giving up


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, origin=dns.name.root)


def _copy(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    """A snapshot, so a later `add` cannot change an answer being rendered."""
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, list(rrset))


def _label(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


class AuthoritativeDns(LoopServer):
    """Authoritative answers for any name from a mutable, thread-safe record set."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        check_loopback(host)
        super().__init__(f"harness-dns-{host}", host, 0)
        self._want_port = port
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self._failures: dict[dns.name.Name, dns.rcode.Rcode] = {}
        self._delays: dict[dns.name.Name, float] = {}
        self.queries: list[tuple[str, str]] = []
        # TTL (and SOA MINIMUM) of the synthesized SOA that negative answers carry: 0 for
        # tests, so no absence is remembered across one; the benchmark sets what a real
        # zone would (RFC 2308 §5).
        self.negative_ttl = 0
        self._servers: list[asyncio.AbstractServer | asyncio.BaseTransport] = []

    # -- lifecycle ---------------------------------------------------------

    # `port` is the bound port, the same for UDP and TCP (0 before `start`).

    def _bind(self) -> tuple[socket.socket, ...]:
        """Bind UDP and TCP to the same port (retry when port 0 lands on a taken TCP one)."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                udp.bind((self.host, self._want_port))
                tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(64)
            except OSError:
                udp.close()
                tcp.close()
                if self._want_port:
                    raise
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def _listen(self, *sockets: socket.socket) -> None:
        udp, tcp = sockets
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        server = await asyncio.start_server(self._serve_tcp, sock=tcp)
        self._servers = [transport, server]

    async def _close(self) -> None:
        for item in self._servers:
            item.close()
        for item in self._servers:
            if isinstance(item, asyncio.AbstractServer):
                await item.wait_closed()
        self._servers = []

    # -- data --------------------------------------------------------------

    def add(self, name: str, rdtype: str, value: str, ttl: int = 60) -> None:
        """Add one record, ``value`` in presentation format (``"10 mx1.example.test."``)."""
        owner = _name(name)
        rtype = dns.rdatatype.from_text(rdtype)
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rtype, value, origin=dns.name.root, relativize=False
        )
        with self._lock:
            node = self._records.setdefault(owner, {})
            rrset = node.get(rtype)
            if rrset is None:
                rrset = node[rtype] = dns.rrset.RRset(owner, dns.rdataclass.IN, rtype)
            rrset.add(rdata)
            rrset.ttl = ttl

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove the records of one type at ``name``, or all of them."""
        owner = _name(name)
        with self._lock:
            node = self._records.get(owner, {})
            if rdtype is None:
                node.clear()
            else:
                node.pop(dns.rdatatype.from_text(rdtype), None)
            if not node:
                self._records.pop(owner, None)

    def clear(self) -> None:
        """Forget all records, faults and the query log."""
        with self._lock:
            self._records.clear()
            self._failures.clear()
            self._delays.clear()
        self.queries.clear()

    def fail(self, name: str, rcode: str = "SERVFAIL") -> None:
        """Answer every query for exactly ``name`` with ``rcode``."""
        with self._lock:
            self._failures[_name(name)] = dns.rcode.from_text(rcode)

    def delay(self, name: str, seconds: float) -> None:
        """Hold answers for exactly ``name`` for ``seconds`` (other names stay fast)."""
        with self._lock:
            self._delays[_name(name)] = seconds

    def heal(self, name: str) -> None:
        """Undo `fail` and `delay` for ``name``."""
        with self._lock:
            self._failures.pop(_name(name), None)
            self._delays.pop(_name(name), None)

    # -- answering ---------------------------------------------------------

    async def answer(self, wire: bytes, udp: bool) -> bytes | None:
        """The response to one query in wire form; None drops it (unparseable input).

        Over UDP an answer past the client's payload size is sent empty with TC set.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.ednsflags & dns.flags.DO:
            response.want_dnssec(True)  # RFC 3225 §3: the DO bit is copied into the response
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.question else dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        self.queries.append((_label(question.name), dns.rdatatype.to_text(question.rdtype)))
        with self._lock:
            wait = self._delays.get(question.name, 0.0)
        if wait:
            await asyncio.sleep(wait)
        self._fill(response, question.name, question.rdtype)
        if not udp:
            return response.to_wire(max_size=65535)  # not capped at the EDNS UDP payload size
        limit = max(512, query.payload if query.edns >= 0 else 512)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, qtype: int) -> None:
        with self._lock:
            failure = self._failures.get(qname)
            if failure is not None:
                response.set_rcode(failure)
                return
            name, seen = qname, set()
            for _ in range(MAX_CHASE):
                seen.add(name)
                node = self._records.get(name, {})
                if qtype == dns.rdatatype.ANY and node:
                    response.answer.extend(_copy(r) for r in node.values())
                    return
                if qtype in node:
                    response.answer.append(_copy(node[qtype]))
                    return
                cname = node.get(dns.rdatatype.CNAME)
                if cname is None:
                    break
                response.answer.append(_copy(cname))
                name = cname[0].target
                if name in seen:
                    return  # a loop: give what we have
            if not self._exists(name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa_for(name))

    def _exists(self, name: dns.name.Name) -> bool:
        """True for a name with records or an empty non-terminal above some."""
        return name in self._records or any(o.is_subdomain(name) for o in self._records)

    def _soa_for(self, name: dns.name.Name) -> dns.rrset.RRset:
        """The closest SOA the data holds, else one synthesized at the last two labels."""
        for depth in range(len(name), 0, -1):
            candidate = name.split(depth)[1]
            soa = self._records.get(candidate, {}).get(dns.rdatatype.SOA)
            if soa is not None:
                return _copy(soa)
        zone = name.split(min(3, len(name)))[1]  # "example.test." (plus the root label)
        ttl = self.negative_ttl
        return dns.rrset.from_text(zone, ttl, "IN", "SOA", SOA_RDATA.rsplit(" ", 1)[0] + f" {ttl}")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await self.answer(await reader.readexactly(length), udp=False)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's stream callback logs a cancelled handler)
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to the server in its own task (a delay blocks no one else)."""

    def __init__(self, server: AuthoritativeDns) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._reply(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.server.answer(data, udp=True)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
