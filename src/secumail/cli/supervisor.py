"""The worker processes of `secumail serve --workers N`: which one this is, and the others.

N identical processes share the store and the ports, one per core. The first (index 0)
starts the other N - 1 as its children: the same command line, with `WORKER_ENV` set to
their index and `HANDOFF_ENV` to the descriptor of their end of an AF_UNIX SOCK_SEQPACKET
socketpair, on which the first process hands them the SMTP connections it accepts
(`secumail.net.handoff`). When the first process ends it sends them SIGTERM and waits for
each (30 s, then SIGKILL). Nothing restarts a worker that died.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence

from secumail.net.handoff import HandoffReceiver, HandoffSender

WORKER_ENV = "SECUMAIL_WORKER_INDEX"
HANDOFF_ENV = "SECUMAIL_HANDOFF_FD"  # the socket a worker gets its SMTP connections on
STOP_TIMEOUT = 30.0  # seconds a worker has to stop after SIGTERM


class Supervisor:
    """This process's place among `workers` processes; the first one starts the rest."""

    def __init__(self, workers: int, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.workers = workers
        self.index = int(env.get(WORKER_ENV, "0"))  # 0: the first, the one that starts the rest
        self.children: list[subprocess.Popen[bytes]] = []
        self._handoff_to: list[socket.socket] = []
        fd = env.get(HANDOFF_ENV)
        self._handoff_from = socket.socket(fileno=int(fd)) if self.index > 0 and fd else None

    @property
    def is_first(self) -> bool:
        return self.index == 0

    def start_workers(self, argv: Sequence[str] | None = None) -> None:
        """In the first process: start workers 1 … N-1, each running `argv` (default: this
        process's own command line) with its index and its end of a hand-off socketpair."""
        if not self.is_first or self.workers <= 1:
            return
        args = list(sys.argv[1:] if argv is None else argv)
        for i in range(1, self.workers):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env = {**os.environ, WORKER_ENV: str(i), HANDOFF_ENV: str(theirs.fileno())}
            self.children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "secumail.cli.main", *args],
                    env=env,
                    pass_fds=(theirs.fileno(),),
                )
            )
            theirs.close()
            self._handoff_to.append(ours)

    def handoff_sender(self) -> HandoffSender | None:
        """The first process's side of the hand-off (None without other workers)."""
        return HandoffSender(self._handoff_to) if self._handoff_to else None

    def handoff_receiver(self) -> HandoffReceiver | None:
        """A worker's side of the hand-off (None in the first process)."""
        return HandoffReceiver(self._handoff_from) if self._handoff_from is not None else None

    def stop_workers(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every worker started here, then wait for each (SIGKILL past `timeout`)."""
        for child in self.children:
            child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
