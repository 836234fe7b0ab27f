"""free_ports: distinct ports for one server's listeners (a real bind on loopback, no server)."""

import socket

from smartflow_devstack.process import free_ports


def test_ports_drawn_together_are_distinct_and_free_afterwards() -> None:
    for _ in range(50):
        ports = free_ports(7)
        assert len(set(ports)) == 7
    for port in ports:  # released: a server can bind them
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
