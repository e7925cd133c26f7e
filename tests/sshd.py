"""Real OpenSSH servers for tests: on 127.0.0.1, or inside network namespaces as separate hosts.

Each server gets its own throw-away user (so hosts do not share a home folder), its own host
key and an authorized client key. Needs root (useradd, ip netns) and Debian's openssh-server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


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
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.folder / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [*prefix, SSHD, "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._accepts():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"sshd on {self.host}:{self.port} did not start: {(self.folder / 'sshd.log').read_text()}"
        )

    def _accepts(self) -> bool:
        check = f"exec 3<>/dev/tcp/{self.host}/{self.port}"
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run([*prefix, "bash", "-c", check], capture_output=True).returncode == 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart_dropping_connections(self, down_for: float) -> None:
        """Stop sshd and kill every open session of its user, stay down a while, start again."""
        self.stop()
        subprocess.run(["pkill", "-KILL", "-f", f"sshd: {self.user}"], capture_output=True)
        time.sleep(down_for)
        self.start()

    def new_host_key(self) -> None:
        """As if the server were reinstalled: a different host key on the same address."""
        self.stop()
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
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        done = subprocess.run(
            [*prefix, *self.ssh_argv(), command], capture_output=True, text=True, timeout=30
        )
        return done.stdout


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def ensure_user(name: str) -> None:
    """A throw-away login user; `usermod -p '*'` unlocks it for key login with UsePAM no."""
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        subprocess.run(["usermod", "-p", "*", name], check=True)
    home = Path(f"/home/{name}")
    for leftover in home.glob(".dstack*"):
        shutil.rmtree(leftover, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BASE = Path("/tmp/dstack-test-sshd")  # readable by the test users, unlike pytest's 0700 tmp dirs


def make_server(
    name: str, user: str, host: str = "127.0.0.1", netns: str | None = None
) -> SSHServer:
    folder = BASE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in (BASE, folder):
        os.chmod(path, 0o755)
    ensure_user(user)
    keygen(folder / "host_key")
    keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    os.chmod(folder / "authorized_keys", 0o644)
    port = free_port() if netns is None else 22
    server = SSHServer(host, port, user, folder / "client_key", folder, netns)
    server.start()
    return server


def add_netns(name: str, index: int) -> str:
    """A namespace with a veth pair in 10.200.<index>.0/24; returns the address inside it."""
    outside, inside = f"10.200.{index}.1", f"10.200.{index}.2"
    veth = f"vdst{index}"
    del_netns(name, index)
    for command in (
        ["ip", "netns", "add", name],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"],
        ["ip", "link", "set", f"{veth}p", "netns", name],
        ["ip", "addr", "add", f"{outside}/24", "dev", veth],
        ["ip", "link", "set", veth, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{inside}/24", "dev", f"{veth}p"],
        ["ip", "netns", "exec", name, "ip", "link", "set", f"{veth}p", "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ):
        subprocess.run(command, check=True)
    return inside


def del_netns(name: str, index: int) -> None:
    subprocess.run(["ip", "link", "del", f"vdst{index}"], capture_output=True)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
