"""Accepted connections handed from the process that accepts them to another one.

With `serve --workers N` the first process accepts every submission connection and deals
them out in turn: to itself and to each other process over its own AF_UNIX SOCK_SEQPACKET
socket. One message per connection: one octet saying how its session starts (``T``
implicit TLS, ``S`` plain, for STARTTLS) and the descriptor as SCM_RIGHTS ancillary data
(unix(7)); the receiver gets a socket of its own for the same connection. Dealing in turn
makes 8 connections 4 + 4 over two processes, where SO_REUSEPORT's hash made 5 + 3 or 6 + 2
about two times in three.

Which processes exist and how their sockets are made is the supervisor's business
(`secumail.cli.supervisor`), not this module's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence

log = logging.getLogger("secumail.submission")

IMPLICIT_TLS = b"T"
STARTTLS = b"S"

ServeConnection = Callable[[socket.socket, bool], None]
"""Called with a connection received and whether it starts with implicit TLS."""


def send_connection(peer: socket.socket, conn: socket.socket, implicit: bool) -> None:
    """Pass `conn` over `peer`; it stays open here too (close it once sent).
    OSError when the receiving side has gone."""
    socket.send_fds(peer, [IMPLICIT_TLS if implicit else STARTTLS], [conn.fileno()])


def receive_connection(peer: socket.socket) -> list[tuple[socket.socket, bool]] | None:
    """The connections of the next message on `peer` (a non-blocking `peer`: [] when none
    waits); None when the sending side has gone."""
    try:
        kind, fds, _flags, _addr = socket.recv_fds(peer, 1, 1)
    except BlockingIOError:
        return []
    except OSError:
        return None
    if not kind and not fds:
        return None
    return [(socket.socket(fileno=fd), kind == IMPLICIT_TLS) for fd in fds]


class HandoffSender:
    """Deals accepted connections out in turn: this process first, then each peer."""

    def __init__(self, peers: Sequence[socket.socket]) -> None:
        self.peers = list(peers)  # peers[i - 1] goes to worker i
        self._turn = 0

    def hand_off(self, conn: socket.socket, implicit: bool) -> bool:
        """True when another process took `conn` (closed here); False: serve it here —
        this process's turn, or the peer whose turn it was has gone."""
        turn = self._turn % (len(self.peers) + 1)
        self._turn += 1
        if not turn:
            return False
        try:
            send_connection(self.peers[turn - 1], conn, implicit)
        except OSError as exc:
            log.warning("worker %d does not take connections (%s); serving here", turn, exc)
            return False
        conn.close()
        return True


class HandoffReceiver:
    """The connections another process hands to this one, served as they arrive."""

    def __init__(self, peer: socket.socket) -> None:
        self.peer = peer
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, serve: ServeConnection) -> None:
        """Call `serve` for every connection received, on the running loop, until the
        sending side goes or `stop`."""
        loop = self._loop = asyncio.get_running_loop()
        self.peer.setblocking(False)

        def readable() -> None:
            while True:
                received = receive_connection(self.peer)
                if received == []:
                    return
                if received is None:  # the first worker has gone
                    loop.remove_reader(self.peer.fileno())
                    return
                for conn, implicit in received:
                    serve(conn, implicit)

        loop.add_reader(self.peer.fileno(), readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.peer.fileno())
            self._loop = None
