"""Forwarding a job's ports from a pool host to free ports on this machine (like `ssh -L`).

Each tunnel accepts connections on 127.0.0.1 and opens a `direct-tcpip` channel per connection;
a refused channel (nothing listens on the host yet) closes that one connection, never the
tunnel, so a URL printed before the server is up starts working once it is. (paramiko's
channels, not Fabric's ``forward_local``: that needs the local port chosen up front, and one
refused channel ends its whole tunnel.)
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path
from typing import Any

from dstack.ssh.connect import HostAddress, connect


class Tunnel(threading.Thread):
    def __init__(self, transport: Any, remote_port: int) -> None:
        super().__init__(daemon=True)
        self.transport, self.remote_port = transport, remote_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.local_port = int(self.listener.getsockname()[1])
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.2)
            if not ready:
                continue
            client, peer = self.listener.accept()
            threading.Thread(target=self._serve, args=(client, peer), daemon=True).start()

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        import paramiko

        try:
            channel = self.transport.open_channel(
                "direct-tcpip", ("127.0.0.1", self.remote_port), peer
            )
        except (paramiko.SSHException, OSError, EOFError):  # nothing listens there (yet), or
            client.close()  # the connection dropped
            return
        with contextlib.closing(client), contextlib.closing(channel):
            while not self.stopped.is_set():
                ready, _, _ = select.select([client, channel], [], [], 0.5)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in ready:
                    data = channel.recv(65536)
                    if not data:
                        break
                    client.sendall(data)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


class Forwards:
    """Open tunnels (local port -> host's 127.0.0.1:remote port) until ``close``."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def add(self, address: HostAddress, known_hosts: Path, remote_ports: list[int]) -> list[int]:
        conn = self._stack.enter_context(connect(address, known_hosts))
        local_ports = []
        for remote in remote_ports:
            tunnel = Tunnel(conn.transport, remote)
            tunnel.start()
            self._stack.callback(tunnel.close)
            local_ports.append(tunnel.local_port)
        return local_ports

    def close(self) -> None:
        self._stack.close()
