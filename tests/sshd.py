"""Real OpenSSH servers for tests: on 127.0.0.1, or inside network namespaces as separate hosts.

Each server gets its own throw-away user (so hosts do not share a home folder), its own host
key and an authorized client key. Needs root (useradd, ip netns) and Debian's openssh-server.

Users, namespaces, interfaces and folders carry this test session's SESSION tag, and each
namespace gets a /24 that nothing on the machine uses yet, so two test runs on one machine
never share or remove each other's. Whoever makes one removes it; processes are stopped by pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_for

SSHD = "/usr/sbin/sshd"
SESSION = secrets.token_hex(3)  # in every name this session creates on the machine
BASE = Path("/tmp/dstack-test-sshd")  # readable by the test users, unlike pytest's 0700 tmp dirs


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    key: Path
    folder: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.host}\nHostKey {self.folder / 'host_key'}\n"
            f"PidFile {self.folder / 'sshd.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\nMaxStartups 100:30:200\nMaxSessions 50\n"
            f"AllowUsers {self.user}\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        with open(self.folder / "sshd.log", "wb") as log:
            # `ip netns exec` execs sshd: the pid is sshd's own
            proc = subprocess.Popen(
                [*self._in_netns(), SSHD, "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.proc = proc

        def accepts() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            return self._accepts()

        wait_for(accepts, timeout=10, what=f"sshd answering on {self.host}:{self.port}")

    def _in_netns(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _accepts(self) -> bool:
        check = f"exec 3<>/dev/tcp/{self.host}/{self.port}"
        done = subprocess.run([*self._in_netns(), "bash", "-c", check], capture_output=True)
        return done.returncode == 0

    def _halt(self) -> None:
        """Stop this sshd and the connection processes it forked, all by pid: open sessions
        drop as if the host went away."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in forked_sshd(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and remove what make_server made: its user (and home) and folder."""
        self._halt()
        done = subprocess.run(["userdel", "-r", "-f", self.user], capture_output=True, text=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not remove the test user {self.user}: {done.stderr}")

    def restart_dropping_connections(self, down_until: Callable[[], object]) -> None:
        """Drop every open session and stay down until ``down_until()`` holds, then start."""
        self._halt()
        wait_for(down_until, timeout=60, what="the condition to come back up on")
        self.start()

    def new_host_key(self) -> None:
        """As if the server were reinstalled: a different host key on the same address."""
        self._halt()
        (self.folder / "host_key").unlink()
        (self.folder / "host_key.pub").unlink()
        keygen(self.folder / "host_key")
        self.start()

    def pool_add_args(self, name: str) -> list[str]:
        """`dstack pool add` arguments for this server."""
        return [
            "pool",
            "add",
            name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--user",
            self.user,
            "--identity-file",
            str(self.key),
        ]

    def ssh_argv(self) -> list[str]:
        """A plain OpenSSH command line to this server, for checks and comparisons."""
        return [
            "ssh",
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@{self.host}",
        ]

    def ssh(self, command: str) -> str:
        """Run a command as the test user directly (not through dstack), for checks."""
        done = subprocess.run(
            [*self._in_netns(), *self.ssh_argv(), command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout

    @property
    def home(self) -> Path:
        return Path(f"/home/{self.user}")


def _processes() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process, from /proc/*/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        yield int(entry.name), int(stat[stat.rindex(")") + 2 :].split()[1]), name


def forked_sshd(pid: int) -> list[int]:
    """The sshd processes descended from ``pid`` (one per connection, and its session
    process), deepest first."""
    table = list(_processes())
    found: list[int] = []
    parents = {pid}
    while True:
        below = [p for p, parent, name in table if parent in parents and name == "sshd"]
        below = [p for p in below if p not in found]
        if not below:
            return found[::-1]
        found += below
        parents = set(below)


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def create_user(name: str) -> None:
    """A new throw-away login user; `usermod -p '*'` unlocks it for key login with UsePAM no."""
    if subprocess.run(["id", name], capture_output=True).returncode == 0:
        raise RuntimeError(f"user {name} already exists: another test session's?")
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_server(
    name: str, user: str, host: str = "127.0.0.1", netns: str | None = None
) -> SSHServer:
    """A started server for a new user ``user-SESSION``; ``stop()`` removes both."""
    folder = BASE / f"{name}-{SESSION}"
    folder.mkdir(parents=True)
    for path in (BASE, folder):
        os.chmod(path, 0o755)  # whatever the umask: the test users read their keys here
    session_user = f"{user}-{SESSION}"
    create_user(session_user)
    port = free_port() if netns is None else 22
    server = SSHServer(host, port, session_user, folder / "client_key", folder, netns)
    try:
        keygen(folder / "host_key")
        keygen(folder / "client_key")
        shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
        os.chmod(folder / "authorized_keys", 0o644)
        server.start()
    except BaseException:
        server.stop()  # the user and folder made so far
        raise
    return server


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to the machine by a veth pair in its own /24."""

    name: str
    veth: str
    network: ipaddress.IPv4Network

    @property
    def outside(self) -> str:
        return str(self.network[1])

    @property
    def inside(self) -> str:
        return str(self.network[2])

    def delete(self) -> None:
        """Deleting the namespace also deletes the veth pair."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=True)


POOL = ipaddress.IPv4Network("10.200.0.0/16")  # the /24s namespaces are given from
LOCK = Path(tempfile.gettempdir()) / "dstack-test-netns.lock"


def networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine has an address in or a route to."""
    found = []
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True)
    for line in addrs.stdout.splitlines():
        found.append(ipaddress.IPv4Interface(line.split()[3]).network)
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True)
    for line in routes.stdout.splitlines():
        prefix = line.split()[0]
        if prefix != "default":
            found.append(ipaddress.IPv4Network(prefix, strict=False))
    return found


def add_netns(index: int) -> Namespace:
    """Namespace ``dstack-SESSION-hINDEX`` in the first /24 of POOL that nothing uses; the
    choice and the address that claims it are made under a machine-wide lock, so two
    sessions starting together cannot pick the same one."""
    name, veth = f"dstack-{SESSION}-h{index}", f"vd{SESSION}{index}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            space = Namespace(name, veth, _free_network())
            subprocess.run(
                ["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"], check=True
            )
            subprocess.run(["ip", "addr", "add", f"{space.outside}/24", "dev", veth], check=True)
        inside = ["ip", "netns", "exec", name, "ip"]
        for command in (
            ["ip", "link", "set", f"{veth}p", "netns", name],
            ["ip", "link", "set", veth, "up"],
            [*inside, "addr", "add", f"{space.inside}/24", "dev", f"{veth}p"],
            [*inside, "link", "set", f"{veth}p", "up"],
            [*inside, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True)
    except BaseException:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)  # if still outside
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        raise
    return space


def _free_network() -> ipaddress.IPv4Network:
    used = networks_in_use()
    for network in list(POOL.subnets(new_prefix=24))[1:]:
        if not any(network.overlaps(u) for u in used):
            return network
    raise RuntimeError(f"every /24 in {POOL} is in use on this machine")
