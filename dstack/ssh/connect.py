"""Opening SSH connections with pinned host keys; paramiko's errors become clear DstackErrors."""

from __future__ import annotations

import fcntl
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import DstackError

if TYPE_CHECKING:
    from fabric import Connection


class HostError(DstackError):
    """A host cannot be reached or refuses us."""


class HostKeyError(HostError):
    """The host's key is not the one pinned when it was added."""


@dataclass(frozen=True)
class HostAddress:
    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.user + '@' if self.user else ''}{self.host}:{self.port})"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _pinning_policy(known_hosts: Path) -> Any:
    import paramiko

    class Pin(paramiko.MissingHostKeyPolicy):
        """Trust on first use: record the key the host presents (used only by `pool add`)."""

        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            with open(known_hosts.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                keys = paramiko.HostKeys()
                if known_hosts.exists():
                    keys.load(str(known_hosts))
                keys.add(hostname, key.get_name(), key)
                keys.save(str(known_hosts))
            client.get_host_keys().add(hostname, key.get_name(), key)

    return Pin()


def forget_host_key(known_hosts: Path, address: HostAddress) -> None:
    import paramiko

    if not known_hosts.exists():
        return
    keys = paramiko.HostKeys(str(known_hosts))
    keys.pop(address.known_hosts_name, None)
    keys.save(str(known_hosts))


def connect(
    address: HostAddress, known_hosts: Path, pin: bool = False, timeout: float = 10
) -> Connection:
    """An open connection; refuses unknown or changed host keys unless ``pin`` (first add)."""
    import paramiko
    from fabric import Connection

    kwargs: dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
    if address.identity_file:
        kwargs |= {"key_filename": address.identity_file, "look_for_keys": False}
    conn = Connection(
        address.host,
        user=address.user,
        port=address.port,
        connect_timeout=int(timeout),
        connect_kwargs=kwargs,
    )
    if known_hosts.exists():
        conn.client.get_host_keys().load(str(known_hosts))
    conn.client.set_missing_host_key_policy(
        _pinning_policy(known_hosts) if pin else paramiko.RejectPolicy()
    )
    try:
        conn.open()
    except paramiko.BadHostKeyException as e:
        raise HostKeyError(
            f"The host key of {address.label} has changed since it was added "
            f"(now {e.key.get_name()} {e.key.fingerprint}). Refusing to connect: this can be an attack.",
            hint=f"if the server was reinstalled, re-pin it: dstack pool add {address.name} "
            f"--host {address.host} --port {address.port} --repin",
        ) from None
    except paramiko.AuthenticationException as e:
        raise HostError(
            f"{address.label} refused the login: {e}.",
            hint="check --user and --identity-file (the public key must be in the user's authorized_keys)",
        ) from None
    except paramiko.SSHException as e:
        if "not found in known_hosts" in str(e):
            raise HostKeyError(
                f"{address.label} has no pinned host key.",
                hint=f"add it to the pool first: dstack pool add {address.name} --host {address.host}",
            ) from None
        raise HostError(f"SSH to {address.label} failed: {e}.") from None
    except (TimeoutError, OSError, EOFError) as e:
        raise HostError(
            f"{address.label} is unreachable: {getattr(e, 'strerror', None) or e}.",
            hint="check the address and port, and that sshd runs there",
        ) from None
    # Small request/response exchanges: without this, delayed ACKs add ~40 ms to each command.
    transport = conn.client.get_transport()
    if transport is not None and isinstance(transport.sock, socket.socket):
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn
