"""A real validating resolver (Debian's ``unbound``) on loopback, in front of the harness DNS.

`ValidatingResolver` writes an unbound configuration to a temporary directory and runs
``unbound -d`` on 127.0.0.1:<free port> (UDP and TCP). Every zone it serves is a
stub zone pointing at the harness authoritative server; the DNSSEC trust anchors are the
signed test zones' DS records (`SignedZoneDns.trust_anchors`), so answers from them carry
the AD bit, bogus ones SERVFAIL, and everything else (plain ``*.test`` names, insecure
delegations) is answered without AD. Secumail reaches it through ``dns.nameservers``.

It never leaves the machine: queries outside the stub zones are REFUSED locally
(``local-zone: "." refuse``), the root itself is stubbed to the harness server, no root
hints or root trust anchor are loaded, and outgoing queries leave from 127.0.0.1 only.

Caching is kept out of the way so a record a test adds is seen by the next query:
``cache-max-ttl: 0``, ``cache-max-negative-ttl: 0``, ``val-bogus-ttl: 0``,
``aggressive-nsec: no`` and ``stub-no-cache``. Keys are still kept for the rest of the
second (and bogus keys 60 s), so `flush` empties every cache through the control socket;
`in_front_of(server)` makes that happen whenever the server adds a zone or breaks or
heals signatures. The log (``val-log-level: 2`` says why an answer is bogus) is
``log_file``.

Unbound's own behaviour, kept on purpose: a client query that takes more than 1.9 s
upstream (a harness ``delay``) gets no reply at all (``discard-timeout``); pass
``settings=["discard-timeout: 0"]`` to get unbound's SERVFAIL after its retries instead.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

from tests.harness import check_loopback, free_port
from tests.harness.dnssec import SignedZoneDns
from tests.harness.server import HarnessServer, ensure_installed, stop_process, wait_until

UNBOUND = "/usr/sbin/unbound"
START_TIMEOUT = 10.0


def _quoted(text: str) -> str:
    if '"' in text:
        raise ValueError(f"no quotes allowed in an unbound setting: {text!r}")
    return f'"{text}"'


def _zone(name: str) -> str:
    return name if name.endswith(".") else name + "."


class ValidatingResolver(HarnessServer):
    """``unbound`` validating answers from the harness DNS server at ``upstream``."""

    def __init__(
        self,
        upstream: str,
        trust_anchors: Sequence[str] = (),
        zones: Sequence[str] = ("test.",),
        insecure: Sequence[str] = (),
        host: str = "127.0.0.1",
        verbosity: int = 1,
        settings: Sequence[str] = (),
    ) -> None:
        """``upstream`` is the harness server's "127.0.0.1:PORT"; ``zones`` are stubbed to it.

        ``trust_anchors`` are ``"<zone> DS ..."`` (or DNSKEY) lines; ``insecure`` names
        zones (under a stubbed one) unbound must not validate (``domain-insecure``), should
        a test want one without an insecure delegation. ``settings`` are extra lines for
        the ``server:`` clause, e.g. ``"discard-timeout: 0"``.
        """
        up_host, _, up_port = upstream.rpartition(":")
        check_loopback(up_host)
        check_loopback(host)
        self.upstream = f"{up_host}@{int(up_port)}"
        self.host = host
        self.port = 0
        self.trust_anchors = list(trust_anchors)
        self.zones = [_zone(z) for z in zones]
        self.insecure = [_zone(z) for z in insecure]
        self.verbosity = verbosity
        self.settings = list(settings)
        self._watched: SignedZoneDns | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_front_of(cls, server: SignedZoneDns, **kwargs: Any) -> ValidatingResolver:
        """A resolver for ``server``: its trust anchors, ``test.`` and its zones stubbed.

        Once started it follows the server: a zone added later is stubbed, and every
        change of keys or signatures flushes the caches (`zone_changed`).
        """
        kwargs.setdefault("trust_anchors", server.trust_anchors)
        kwargs.setdefault("zones", ["test.", *server.zones])
        resolver = cls(server.address, **kwargs)
        resolver._watched = server
        return resolver

    # -- lifecycle ---------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        if self._dir is None:
            raise RuntimeError("unbound not started")
        return self._dir / "unbound.log"

    @property
    def config_file(self) -> Path:
        if self._dir is None:
            raise RuntimeError("unbound not started")
        return self._dir / "unbound.conf"

    def start(self) -> ValidatingResolver:
        ensure_installed(UNBOUND)
        self._dir = Path(tempfile.mkdtemp(prefix="harness-unbound-"))
        last_error = ""
        for _ in range(5):  # a free port can be taken again before unbound binds it
            self.port = free_port(self.host)
            self.config_file.write_text(self._config())
            self._process = subprocess.Popen(
                [UNBOUND, "-d", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                self._wait_ready()
                if self._watched is not None:
                    self._watched.zone_listeners.append(self.zone_changed)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self._kill()
        self.stop()
        raise RuntimeError(f"unbound did not start: {last_error}")

    def stop(self) -> None:
        if self._watched is not None and self.zone_changed in self._watched.zone_listeners:
            self._watched.zone_listeners.remove(self.zone_changed)
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()

    def _wait_ready(self) -> None:
        """Until unbound answers a query (REFUSED for the root is an answer)."""
        process = self._process
        assert process is not None
        probe = dns.message.make_query(".", "SOA")

        def answers() -> bool:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"exited {process.returncode}: {stderr}{self._log_tail()}")
            with contextlib.suppress(dns.exception.Timeout, OSError):
                dns.query.udp(probe, self.host, port=self.port, timeout=0.1)
                return True
            return False

        wait_until(
            answers,
            START_TIMEOUT,
            lambda: f"no answer on {self.address} within {START_TIMEOUT}s{self._log_tail()}",
            interval=0.01,
        )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError, RuntimeError):
            return "\n" + "\n".join(self.log_file.read_text().splitlines()[-20:])
        return ""

    # -- control -----------------------------------------------------------

    def control(self, *command: str) -> str:
        """Run one ``unbound-control`` command, e.g. ``control("flush_zone", "test.")``.

        Spoken straight to the control socket in the temp dir (no TLS on a Unix socket):
        ``UBCT1 <command>\\n``, then the reply until the server closes; well under a
        millisecond, where running ``unbound-control`` costs ~15 ms a command.
        """
        if self._dir is None:
            raise RuntimeError("unbound not started")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self._dir / "control.sock"))
            sock.sendall(f"UBCT1 {' '.join(command)}\n".encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        reply = b"".join(chunks).decode(errors="replace")
        if reply.startswith("error"):
            raise RuntimeError(f"unbound-control {' '.join(command)}: {reply.strip()}")
        return reply

    def add_zone(self, zone: str) -> None:
        """Stub one more zone to the harness server while running (``stub_add``).

        A zone that delegates needs its own stub: unbound asks the parent zone's servers
        for a child's DS and, when the closest stub is above that parent, looks up the
        parent's NS names instead, which cannot lead to a server on a high port.
        """
        zone = _zone(zone)
        if zone not in self.zones:
            self.control("local_zone", zone, "transparent")  # past the "." refuse
            self.control("stub_add", zone, self.upstream)
            self.zones.append(zone)

    def zone_changed(self, zone: str) -> None:
        """`SignedZoneDns.zone_listeners` hook: stub a new zone, then `flush`."""
        self.add_zone(zone)
        self.flush()

    def flush(self) -> None:
        """Forget every cached record, key, denial and bogus answer, and the servers' status.

        Needed after keys or signatures change (`SignedZoneDns.bogus`, `heal`, `clear`):
        unbound keeps a validated key for the rest of the second even at TTL 0, and a
        key it found bogus for 60 s whatever ``val-bogus-ttl`` says.
        """
        self.control("flush_zone", ".")
        self.control("flush_bogus")
        self.control("flush_negative")
        self.control("flush_infra", "all")

    # -- configuration ---------------------------------------------------------

    def _config(self) -> str:
        assert self._dir is not None
        directory = str(self._dir)
        server = [
            f"interface: {self.host}",
            f"port: {self.port}",
            "do-ip4: yes",
            "do-ip6: no",
            "do-udp: yes",
            "do-tcp: yes",
            f"outgoing-interface: {self.host}",  # upstream queries can only go to loopback
            "do-not-query-localhost: no",  # the harness server is on 127.0.0.1
            "access-control: 127.0.0.0/8 allow",
            f"directory: {_quoted(directory)}",
            'chroot: ""',
            'username: ""',
            f"pidfile: {_quoted(directory + '/unbound.pid')}",
            f"logfile: {_quoted(directory + '/unbound.log')}",
            "use-syslog: no",
            "log-time-ascii: yes",
            f"verbosity: {self.verbosity}",
            "val-log-level: 2",
            "log-servfail: yes",
            "num-threads: 1",
            'module-config: "validator iterator"',
            "trust-anchor-signaling: no",  # RFC 8145 key-tag queries: nowhere to send them
            "root-key-sentinel: no",
            "qname-minimisation: no",  # one query per question keeps the harness query log plain
            "aggressive-nsec: no",  # a cached NSEC must not hide a record added later
            "prefetch: no",
            "prefetch-key: no",
            "serve-expired: no",
            "cache-min-ttl: 0",
            "cache-max-ttl: 0",
            "cache-max-negative-ttl: 0",
            "val-bogus-ttl: 0",
            "infra-host-ttl: 1",  # a failed or slow harness server is retried a second later
            "infra-keep-probing: yes",
            'local-zone: "." refuse',  # nothing outside the stub zones is resolved
        ]
        server += [f'trust-anchor: "{anchor}"' for anchor in self.trust_anchors]
        server += [f"domain-insecure: {_quoted(zone)}" for zone in self.insecure]
        server += [f"local-zone: {_quoted(zone)} transparent" for zone in self.zones]
        server += self.settings
        lines = ["server:", *(f"    {line}" for line in server)]
        for zone in [".", *self.zones]:  # the root too: no root hint is ever used
            lines += [
                "stub-zone:",
                f"    name: {_quoted(zone)}",
                f"    stub-addr: {self.upstream}",
                "    stub-prime: no",
                "    stub-first: no",
                "    stub-no-cache: yes",
            ]
        lines += [
            "remote-control:",
            "    control-enable: yes",
            f"    control-interface: {_quoted(directory + '/control.sock')}",
            "    control-use-cert: no",
        ]
        return "\n".join(lines) + "\n"
