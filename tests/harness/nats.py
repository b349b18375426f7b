"""A real NATS server with JetStream (Debian's ``nats-server``) on loopback, for the bus.

`NatsServer` runs ``nats-server -js`` on 127.0.0.1:<free port> with its JetStream store
in a temporary directory of its own, so it never meets a NATS server the machine already
runs (e.g. on 4222) and leaves nothing behind. `url` is what `NatsBus.connect` takes.
Ready when a client's CONNECT gets its PONG back (the server then serves JetStream too:
it starts JetStream before it accepts clients).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.harness import check_loopback, free_port
from tests.harness.server import HarnessServer, ensure_installed, stop_process, wait_until

NATS_SERVER = "/usr/sbin/nats-server"
START_TIMEOUT = 10.0


class NatsServer(HarnessServer):
    """``nats-server -js`` on loopback with a private store directory."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        check_loopback(host)
        self.host = host
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self._dir is not None
        return self._dir / "nats.log"

    def start(self) -> NatsServer:
        ensure_installed(NATS_SERVER)
        self._dir = Path(tempfile.mkdtemp(prefix="secumail-nats-"))
        self.port = free_port(self.host)
        self._process = subprocess.Popen(
            [
                NATS_SERVER,
                "-js",
                "-a", self.host,
                "-p", str(self.port),
                "-sd", str(self._dir / "jetstream"),
                "-l", str(self.log_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(self._answers, START_TIMEOUT, self._failure)
        except Exception:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(self._failure())
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.settimeout(1)
                if not s.recv(4096).startswith(b"INFO "):
                    return False
                s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
                return b"PONG" in s.recv(4096)
        except OSError:
            return False

    def _failure(self) -> str:
        log = ""
        with contextlib.suppress(OSError):
            log = self.log_file.read_text()[-2000:]
        return f"nats-server on {self.host}:{self.port} did not start: {log}"

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
