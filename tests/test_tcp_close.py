"""DelayedClose: what an event-driven TLS client still had queued at close is flushed, then the socket closes."""

from __future__ import annotations

import _socket
import socket as stdsocket

import gevent
import pytest
from gevent import socket

from loadgen.transport.tcp_close import DelayedClose

pytestmark = pytest.mark.timeout(30)


def _pair() -> tuple[_socket.socket, socket.socket]:
    a, b = stdsocket.socketpair()
    ours = _socket.socket(fileno=a.detach())
    ours.setblocking(False)
    return ours, socket.socket(fileno=b.detach())


def _fill(sock: _socket.socket) -> int:
    """Write until the kernel takes no more; returns the bytes it took."""
    sent = 0
    try:
        while True:
            sent += sock.send(b"x" * 65536)
    except BlockingIOError:
        return sent


def test_queued_output_is_flushed_then_half_closed_and_closed_when_the_peer_closes() -> None:
    ours, peer = _pair()
    taken = _fill(ours)
    closing = DelayedClose(ours, bytearray(b"y" * 1_000_000), timeout=10.0)
    received = 0
    while data := peer.recv(65536):  # EOF only after everything: the half-close comes last
        received += len(data)
    assert received == taken + 1_000_000
    peer.close()
    deadline = gevent.get_hub().loop.now() + 5
    while closing._sock is not None and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.01)
    assert closing._sock is None  # released once the peer closed too


def test_a_peer_that_never_reads_is_given_up_after_the_timeout() -> None:
    ours, peer = _pair()
    _fill(ours)
    closing = DelayedClose(ours, bytearray(b"y" * 100_000), timeout=0.2)
    gevent.sleep(0.5)
    assert closing._sock is None
    peer.close()


def test_on_release_tells_an_owner_once() -> None:
    """How the TLS server keeps its closes under way, to end them all when it stops."""
    ours, peer = _pair()
    _fill(ours)
    released: list[DelayedClose] = []
    closing = DelayedClose(ours, bytearray(b"y" * 100_000), timeout=10.0, on_release=released.append)
    while peer.recv(65536):  # everything, then the half-close
        pass
    gevent.sleep(0.1)
    assert not released  # flushed and half-closed, waiting for the peer's close
    peer.close()
    deadline = gevent.get_hub().loop.now() + 5
    while not released and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.01)
    closing.release()  # idempotent: the owner is told once
    assert released == [closing]
