"""Which worker process this is, from the environment the first one sets
(secumail.cli.supervisor); starting the processes themselves is covered end to end
(tests/e2e/test_durability.py, two workers)."""

from __future__ import annotations

import socket

from secumail.cli.supervisor import HANDOFF_ENV, WORKER_ENV, Supervisor
from secumail.net.handoff import receive_connection, send_connection


def test_without_environment_this_is_the_first_process() -> None:
    sup = Supervisor(4, environ={})
    assert sup.is_first and sup.index == 0
    assert sup.handoff_receiver() is None
    assert sup.handoff_sender() is None, "no workers started yet"


def test_a_single_process_starts_no_workers() -> None:
    sup = Supervisor(1, environ={})
    sup.start_workers(["serve"])
    assert sup.children == []
    assert sup.handoff_sender() is None
    sup.stop_workers()


def test_a_worker_reads_its_index_and_its_handoff_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # As in a started worker: the descriptor is the process's, the supervisor adopts it.
    sup = Supervisor(3, environ={WORKER_ENV: "2", HANDOFF_ENV: str(theirs.detach())})
    receiver = sup.handoff_receiver()
    try:
        assert (sup.index, sup.is_first) == (2, False)
        sup.start_workers(["serve"])
        assert sup.children == [], "only the first process starts workers"
        assert receiver is not None
        server, client = socket.socketpair()
        with server, client:
            send_connection(ours, server, implicit=True)
            got = receive_connection(receiver.peer)
            assert got is not None
            conn, implicit = got[0]
            with conn:
                assert implicit
                client.sendall(b"hello")
                assert conn.recv(5) == b"hello"
    finally:
        ours.close()
        if receiver is not None:
            receiver.peer.close()
