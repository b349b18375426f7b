"""The fake internet: servers on loopback that stand in for the world Secumail talks to.

- `tests.harness.pki`: a private CA (good, expired, wrong-name, self-signed, weak certs).
- `tests.harness.dns`: an authoritative DNS server with run-time records and faults.
- `tests.harness.mx`: recipient SMTP servers on 127.0.0.x with scripted behaviour.

Everything listens on 127.0.0.0/8 only. This module holds the two pieces they share:
`free_port()` and `LoopThread`, an asyncio loop running in a background thread.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a server that binds it a moment later.

    Taken below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    may meanwhile become the source port of an outgoing connection, and then the server
    cannot bind it (seen here: "Address already in use" for a gateway's API port). Never
    the same port twice in one test run."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, high - 12000)
    for _ in range(500):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high} on {host}")


def check_loopback(host: str) -> None:
    """Refuse any address outside 127.0.0.0/8: the harness never leaves the machine."""
    if not host.startswith("127."):
        raise ValueError(f"harness servers bind to 127.0.0.0/8 only, not {host!r}")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread until `stop()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name=self.name, daemon=True
        )
        self.loop = loop
        self._thread.start()
        ready.wait()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop from another thread and return its result."""
        if self.loop is None:
            coro.close()
            raise RuntimeError(f"{self.name}: loop not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, func: Any, *args: Any) -> None:
        """Schedule a plain callback on the loop (thread-safe, does not wait)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(func, *args)

    def stop(self) -> None:
        """Stop the loop, cancel what still runs on it and join the thread."""
        if self.loop is None or self._thread is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop = None
        self._thread = None
