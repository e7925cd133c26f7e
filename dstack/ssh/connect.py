"""Opening SSH connections with pinned host keys; paramiko's errors become clear DstackErrors."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import DstackError, SpecError

if TYPE_CHECKING:
    from fabric import Connection


class HostError(DstackError):
    """A host cannot be reached or refuses us."""


class HostKeyError(HostError):
    """The host's key is not the one pinned when it was added."""


# A host name or address and a login name, as ssh and rsync take them on a command line:
# nothing that a shell, ssh's option parser or its %-tokens would read as more than a name.
_HOST = re.compile(r"^(?!-)[A-Za-z0-9_.:%\[\]-]+$")  # '%': an IPv6 zone (fe80::1%eth0)
_USER = re.compile(r"^(?!-)[A-Za-z0-9_.@-]+\$?$")  # '@': domain logins (ann@corp.example)


@dataclass(frozen=True)
class HostAddress:
    """How to reach a host; a host or user that is not a plain name is refused on creation."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None

    def __post_init__(self) -> None:
        if not _HOST.match(self.host):
            raise SpecError(
                f"Host '{self.name}': {self.host!r} is not a host name or address.",
                hint="give a name like gpu1.example.com or an address like 10.0.0.5",
            )
        if self.user is not None and not _USER.match(self.user):
            raise SpecError(
                f"Host '{self.name}': {self.user!r} is not a login name.",
                hint="login names are letters, digits, '.', '_', '@' and '-', not starting with '-'",
            )
        if not 0 < self.port < 65536:
            raise SpecError(f"Host '{self.name}': port {self.port} is not a TCP port (1-65535).")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.user + '@' if self.user else ''}{self.host}:{self.port})"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class _PinOnFirstUse:
    """Trust on first use: record the key the host presents (used only by `pool add`). A
    paramiko host-key policy (it calls ``missing_host_key``): Fabric has no say over host
    keys beyond the paramiko client it wraps."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        import paramiko
        from filelock import FileLock

        with FileLock(self.known_hosts.with_suffix(".lock")):
            keys = paramiko.HostKeys()
            if self.known_hosts.exists():
                keys.load(str(self.known_hosts))
            keys.add(hostname, key.get_name(), key)
            keys.save(str(self.known_hosts))
        client.get_host_keys().add(hostname, key.get_name(), key)


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
        _PinOnFirstUse(known_hosts) if pin else paramiko.RejectPolicy()
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
    if isinstance(conn.transport.sock, socket.socket):
        conn.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn
