"""A host's SSH connection that survives drops: every call reconnects with backoff when needed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import DstackError
from dstack.ssh.connect import HostAddress, HostError, HostKeyError, connect

if TYPE_CHECKING:
    from fabric import Connection


class Remote:
    """Runs commands and moves files on one host; ``retry_for`` bounds how long it reconnects."""

    def __init__(self, address: HostAddress, known_hosts: Path, retry_for: float = 60.0) -> None:
        self.address, self.known_hosts, self.retry_for = address, known_hosts, retry_for
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or not self._conn.is_connected:
            self._conn = connect(self.address, self.known_hosts)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _retrying(self, action: Any) -> Any:
        delay, deadline = 0.2, time.monotonic() + self.retry_for
        while True:
            try:
                return action(self._connection())
            except HostKeyError:
                raise
            except (HostError, OSError, EOFError) + _paramiko_errors() as e:
                self.close()
                if time.monotonic() + delay > deadline:
                    if isinstance(e, DstackError):
                        raise
                    raise HostError(f"Lost the connection to {self.address.label}: {e}.") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def exec(self, command: str, data: bytes = b"") -> tuple[int, bytes]:
        """Run ``command`` with ``data`` on stdin; (exit status, stdout)."""
        code, out, _ = self.exec_full(command, data)
        return code, out

    def exec_full(self, command: str, data: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run ``command`` with ``data`` on stdin; (exit status, stdout, stderr)."""

        def run(conn: Connection) -> tuple[int, bytes, bytes]:
            transport = conn.client.get_transport()
            assert transport is not None
            channel = transport.open_session()
            try:
                channel.exec_command(command)
                if data:
                    channel.sendall(data)
                channel.shutdown_write()
                stdout = channel.makefile("rb").read()
                stderr = channel.makefile_stderr("rb").read()
                status = channel.recv_exit_status()
                if status == -1:  # the channel closed without an exit status: connection lost
                    raise EOFError("the connection closed during a command")
                return status, stdout, stderr
            finally:
                channel.close()

        return self._retrying(run)  # type: ignore[no-any-return]

    def check(self, command: str, data: bytes = b"") -> bytes:
        code, out = self.exec(command, data)
        if code != 0:
            raise HostError(
                f"On {self.address.label}, `{command.splitlines()[0][:60]}` failed "
                f"with exit code {code}."
            )
        return out

    def put(self, local: Path, remote: str) -> None:
        self._retrying(lambda conn: conn.sftp().put(str(local), remote))

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        def write(conn: Connection) -> None:
            sftp = conn.sftp()
            with sftp.open(remote, "wb") as handle:
                handle.chmod(mode)
                handle.write(data)

        self._retrying(write)

    def get(self, remote: str, local: Path) -> None:
        self._retrying(lambda conn: conn.sftp().get(remote, str(local)))


def _paramiko_errors() -> tuple[type[BaseException], ...]:
    import paramiko

    return (paramiko.SSHException,)
