"""What the servers of the fake internet share: start and stop, use as a context manager,
waiting until a server is ready, and (for those on their own asyncio loop) the thread.

- `HarnessServer`: ``start()`` returns the server, ``stop()`` may be called twice or
  after a failed start, ``with Server(...) as s:`` does both.
- `LoopServer`: a `HarnessServer` on a `LoopThread`; a subclass binds its sockets in
  `_bind` (in the test's thread, so a taken port fails the test at once), serves them in
  `_listen` and closes them in `_close` (both on the loop).
- `wait_until`: poll a readiness check (a port listening, a query answered) with a
  deadline.
- `ensure_installed`: a Debian peer (unbound, nats-server, clamd, …) installed through
  scripts/ensure-system-deps when its binary is missing; `stop_process`: terminate a
  peer's process, killed when it does not end.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness import LoopThread


class HarnessServer:
    """Start/stop and the context manager; subclasses implement `start` and `stop`."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


ENSURE_SYSTEM_DEPS = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-deps"


def ensure_installed(binary: str) -> None:
    """Install what provides `binary` through scripts/ensure-system-deps when it is missing."""
    if not Path(binary).exists():
        subprocess.run([str(ENSURE_SYSTEM_DEPS)], check=True)
    if not Path(binary).exists():
        raise RuntimeError(f"{binary} missing after {ENSURE_SYSTEM_DEPS}")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate `process` (None: nothing to do); kill it when it has not ended in `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    failure: Callable[[], str],
    interval: float = 0.02,
) -> None:
    """Call `ready` until it is true; RuntimeError(`failure()`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(interval)
    raise RuntimeError(failure())


def tcp_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class LoopServer(HarnessServer):
    """A harness server on ``host:port`` running on its own asyncio loop in a thread."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._runner = LoopThread(name)

    @property
    def port(self) -> int:
        """The bound port (the one asked for, until `start` binds port 0)."""
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    def start(self) -> Self:
        sockets = self._bind()
        self._port = sockets[0].getsockname()[1]
        self._runner.start()
        self._runner.run(self._listen(*sockets))
        return self

    def stop(self) -> None:
        if self._runner.loop is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._close())
            self._runner.stop()

    def _bind(self) -> tuple[socket.socket, ...]:
        """The server's sockets, bound and non-blocking; the first one's port is `port`."""
        raise NotImplementedError

    async def _listen(self, *sockets: socket.socket) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError
