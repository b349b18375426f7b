"""Connections handed from one process to another (secumail.net.handoff), over a real
AF_UNIX SOCK_SEQPACKET socketpair: the descriptor arrives, and the connection works."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from secumail.net.handoff import (
    HandoffReceiver,
    HandoffSender,
    receive_connection,
    send_connection,
)


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The first worker's end and another worker's end of one hand-off socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """An accepted connection (server side) and its client."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def test_a_connection_passed_arrives_and_carries_data_both_ways(link, connection) -> None:
    ours, theirs = link
    server, client = connection
    send_connection(ours, server, implicit=False)
    server.close()  # the sender's copy goes; the receiver's stays open
    received = receive_connection(theirs)
    assert received is not None and len(received) == 1
    conn, implicit = received[0]
    with conn:
        assert implicit is False
        client.sendall(b"EHLO client.test\r\n")
        assert conn.recv(100) == b"EHLO client.test\r\n"
        conn.sendall(b"250 ok\r\n")
        assert client.recv(100) == b"250 ok\r\n"


def test_implicit_tls_is_told_to_the_receiver(link, connection) -> None:
    ours, theirs = link
    send_connection(ours, connection[0], implicit=True)
    received = receive_connection(theirs)
    assert received is not None
    conn, implicit = received[0]
    conn.close()
    assert implicit is True


def test_receiver_sees_the_sender_gone(link) -> None:
    ours, theirs = link
    ours.close()
    assert receive_connection(theirs) is None


def test_nothing_waiting_on_a_non_blocking_socket(link) -> None:
    theirs = link[1]
    theirs.setblocking(False)
    assert receive_connection(theirs) == []


def test_sender_deals_in_turn_this_process_first(connection) -> None:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    sender = HandoffSender([ours for ours, _ in pairs])
    try:
        kept = []
        for _ in range(6):
            server, client = socket.socketpair()
            client.close()
            if sender.hand_off(server, implicit=False):
                assert server.fileno() == -1, "closed here once handed over"
            else:
                kept.append(server)
        assert len(kept) == 2, "every third connection is this process's"
        for _, theirs in pairs:
            theirs.setblocking(False)
            got = [receive_connection(theirs) for _ in range(3)]
            assert [len(g or []) for g in got] == [1, 1, 0], "two each for the other workers"
            for g in got:
                for conn, _ in g or []:
                    conn.close()
        for conn in kept:
            conn.close()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_sender_serves_here_when_a_worker_has_gone(caplog) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()
    sender = HandoffSender([ours])
    try:
        server, client = socket.socketpair()
        with server, client:
            assert sender.hand_off(server, implicit=False) is False  # this process's turn
            assert sender.hand_off(server, implicit=False) is False  # worker 1 has gone
            assert server.fileno() != -1
        assert "worker 1 does not take connections" in caplog.text
    finally:
        ours.close()


def test_receiver_serves_each_connection_on_the_loop(link) -> None:
    async def main() -> None:
        ours, theirs = link
        receiver = HandoffReceiver(theirs)
        served: list[tuple[socket.socket, bool]] = []
        arrived = asyncio.Event()

        def serve(conn: socket.socket, implicit: bool) -> None:
            served.append((conn, implicit))
            if len(served) == 2:
                arrived.set()

        receiver.start(serve)
        server1, client1 = socket.socketpair()
        server2, client2 = socket.socketpair()
        send_connection(ours, server1, implicit=True)
        send_connection(ours, server2, implicit=False)
        server1.close()
        server2.close()
        try:
            await asyncio.wait_for(arrived.wait(), 5)
            assert [implicit for _, implicit in served] == [True, False]
            served[0][0].sendall(b"220 first\r\n")
            assert client1.recv(100) == b"220 first\r\n"
            served[1][0].sendall(b"220 second\r\n")
            assert client2.recv(100) == b"220 second\r\n"
        finally:
            receiver.stop()
            for conn, _ in served:
                conn.close()
            client1.close()
            client2.close()

    asyncio.run(main())
