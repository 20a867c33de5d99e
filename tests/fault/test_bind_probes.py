"""Issue 10's bind probe: the gRPC port bound every interface and metrics bound 0.0.0.0 whatever `--host`
said. Every socket the server process listens on must be on the configured host (127.0.0.1 here)."""

from __future__ import annotations

import psutil
import pytest

from .conftest import ServerProcess

pytestmark = pytest.mark.fault


def test_every_listening_socket_is_on_the_configured_host(server: ServerProcess) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    ports = {address.port for address in listening}
    assert server.metrics_port in ports and int(server.target.rsplit(":", 1)[1]) in ports, listening
    # gRPC may bind an IPv6 socket to the IPv4-mapped loopback address: loopback all the same.
    assert all(address.ip.removeprefix("::ffff:") == "127.0.0.1" for address in listening), listening
