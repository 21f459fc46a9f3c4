"""Ports for embedded servers: never one an outgoing connection can take meanwhile."""

from __future__ import annotations

import socket

from freshrank.embedded import free_port
from freshrank.embedded.process import _can_bind, _ephemeral_low


def test_ports_come_from_below_the_ephemeral_range_and_bind_at_once() -> None:
    port = free_port()
    assert 10000 <= port < _ephemeral_low()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))  # what the server does next: no SO_REUSEADDR needed
        server.listen()


def test_no_port_is_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_port_with_a_listener_is_not_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not _can_bind(server.getsockname()[1])
