"""Ports for a fleet of child processes."""

from __future__ import annotations

import socket

from omnistock.platform.children import free_ports


def test_ports_handed_out_together_are_distinct_and_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:  # nothing holds them once chosen: each can be bound
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
