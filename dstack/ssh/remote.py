"""A host's SSH connection that survives drops: every call reconnects with backoff when needed.

A full disk on the host is told apart from other failures, as "no space left on HOST": from a
command's stderr, and for SFTP writes (whose server says only "Failure") from `df` there.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dstack import scripts
from dstack.retry import retry
from dstack.ssh.connect import HostAddress, HostError, HostKeyError, connect

if TYPE_CHECKING:
    from fabric import Connection
    from paramiko import SFTPClient

T = TypeVar("T")

# Free space (KiB) at or below which a failed write is put down to a full disk: what a write
# that failed for want of space leaves free is less than one of its chunks.
NEARLY_FULL_KIB = 256
NO_SPACE_HINT = "free space there; ~/.dstack/blobs on the host is a cache dstack refills"


class NoSpaceError(HostError):
    """The host's disk is full: retrying over a new connection cannot help."""


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

    def _retrying(self, action: Callable[[Connection], T]) -> T:
        """``action`` over a live connection, reconnecting after drops (waits from 0.2 s,
        doubling up to 5 s) for ``retry_for`` seconds; a changed host key or a full disk is
        not a drop."""

        drops = (OSError, EOFError) + _paramiko_errors()

        def transient(error: BaseException) -> bool:
            lasting = isinstance(error, HostKeyError | NoSpaceError)
            return isinstance(error, (HostError, *drops)) and not lasting

        try:
            return retry(
                lambda: action(self._connection()),
                retry_on=transient,
                wait=0.2,
                max_wait=5.0,
                give_up_after=self.retry_for,
                after_failure=lambda _: self.close(),
            )
        except drops as e:  # a HostError of its own goes up as it is
            raise HostError(f"Lost the connection to {self.address.label}: {e}.") from None

    def exec(self, command: str, data: bytes = b"") -> tuple[int, bytes]:
        """Run ``command`` with ``data`` on stdin; (exit status, stdout)."""
        code, out, _ = self.exec_full(command, data)
        return code, out

    def exec_full(self, command: str, data: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run ``command`` with ``data`` on stdin; (exit status, stdout, stderr)."""
        return self._retrying(lambda conn: _run(conn, command, data))

    def check(self, command: str, data: bytes = b"") -> bytes:
        """Run ``command``; its stdout, or the error that its exit status and stderr tell."""
        return self._checked(command, data, f"`{command.splitlines()[0][:60]}`")

    def run_script(
        self, name: str, *args: str | int, data: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """Run the packaged script ``name`` (dstack/scripts) with ``args`` and ``data`` on
        stdin; (exit status, stdout, stderr)."""
        return self.exec_full(scripts.command(name, *args), data)

    def check_script(self, name: str, *args: str | int, data: bytes = b"") -> bytes:
        """Run the packaged script ``name``; its stdout, or the error its exit status tells."""
        return self._checked(scripts.command(name, *args), data, f"the host script {name}")

    def _checked(self, command: str, data: bytes, what: str) -> bytes:
        code, out, err = self.exec_full(command, data)
        if code != 0:
            raise self.failure(what, code, err)
        return out

    def failure(self, what: str, code: int, stderr: bytes) -> HostError:
        """The error for ``what`` (a command, a step) that exited with ``code``: a full disk
        says so, anything else ends with the last line of its stderr."""
        lines = stderr.decode(errors="replace").strip().splitlines()
        full = [line for line in lines if "No space left on device" in line]
        if full:
            return self._no_space(_shorten(full[-1]))
        last = f": {_shorten(lines[-1]).rstrip('.')}" if lines else ""
        return HostError(f"On {self.address.label}, {what} failed with exit code {code}{last}.")

    def full_disk(self, folder: str, detail: str) -> NoSpaceError | None:
        """The error to give when ``folder``'s disk on the host is (nearly) full, else None."""
        return self._retrying(lambda conn: self._full(conn, folder, detail))

    def _full(self, conn: Connection, folder: str, detail: str) -> NoSpaceError | None:
        code, out, _ = _run(conn, scripts.command("host-df.sh", folder))
        try:
            available = int(out.decode().splitlines()[-1].split()[3])
        except (IndexError, ValueError):  # no df, or an output we cannot read: not known full
            return None
        if code != 0 or available > NEARLY_FULL_KIB:
            return None
        return self._no_space(f"{detail} ({available} KB free in {folder})")

    def _no_space(self, detail: str) -> NoSpaceError:
        return NoSpaceError(f"no space left on {self.address.label}: {detail}", hint=NO_SPACE_HINT)

    def _writing(self, remote: str, write: Callable[[SFTPClient], object]) -> None:
        """Run ``write`` over SFTP. A failure that SFTP does not explain (errno None: "Failure",
        "size mismatch in put!") on a full disk becomes NoSpaceError, its partial file removed."""

        def attempt(conn: Connection) -> None:
            sftp = conn.sftp()
            try:
                write(sftp)
            except OSError as e:
                if e.errno is not None:
                    raise
                folder = posixpath.dirname(remote) or "."
                full = self._full(conn, folder, f"writing {posixpath.basename(remote)} failed: {e}")
                if full is None:
                    raise
                with contextlib.suppress(OSError):  # give back what the partial file took
                    sftp.remove(remote)
                raise full from None

        self._retrying(attempt)

    def put(self, local: Path, remote: str) -> None:
        self._writing(remote, lambda sftp: sftp.put(str(local), remote))

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        def write(sftp: SFTPClient) -> None:
            with sftp.open(remote, "wb") as handle:
                handle.chmod(mode)
                handle.write(data)

        self._writing(remote, write)

    def get(self, remote: str, local: Path) -> None:
        self._retrying(lambda conn: conn.sftp().get(remote, str(local)))


def _run(conn: Connection, line: str, data: bytes = b"") -> tuple[int, bytes, bytes]:
    """One command over ``conn``'s transport: (exit status, stdout, stderr). A paramiko channel,
    not Fabric's ``run``: that decodes output as text, and logs and file names are bytes."""
    channel = conn.transport.open_session()
    try:
        channel.exec_command(line)
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


def _shorten(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _paramiko_errors() -> tuple[type[BaseException], ...]:
    import paramiko

    return (paramiko.SSHException,)
