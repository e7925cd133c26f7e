"""Fixtures: a throw-away DSTACK_HOME, a project folder with .dstack/, and the real CLI in a subprocess."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from buckets import SeaweedS3
    from sshd import SSHServer

# Started in the background by a non-interactive shell, pytest inherits SIGINT ignored, and so
# would every dstack process it starts: the Ctrl-C tests need the terminal's default back.
signal.signal(signal.SIGINT, signal.default_int_handler)


class Project:
    """A project folder whose `.dstack/` files a test writes, and a way to run `dstack` in it."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home = root, home
        self.procs: list[subprocess.Popen[str]] = []
        self.extra_env: dict[str, str] = {}  # e.g. a bucket store's credentials
        (root / ".dstack").mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        """After a test, pass or fail: no dstack process and no job of it is left running."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        listed = self.dstack("ps", "--json", "-a") if (self.home / "state.db").exists() else None
        if listed is not None and listed.returncode == 0:  # a test may leave a broken config
            import json

            for run in json.loads(listed.stdout):
                if run["status"] in ("submitted", "waiting", "running"):
                    self.dstack("stop", run["name"], "-x")

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def workflows(self, text: str) -> Path:
        return self.write(".dstack/workflows.yaml", text)

    def env(self, **extra: str) -> dict[str, str]:
        base = {**os.environ, "DSTACK_HOME": str(self.home), "COLUMNS": "80"}
        return {**base, **self.extra_env, **extra}

    def dstack(
        self,
        *args: str,
        timeout: float = 120,
        check: bool | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "dstack", *args],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check is True:
            assert done.returncode == 0, (
                f"dstack {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dstack", *args],
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def ps(self, all_runs: bool = True) -> list[dict]:  # type: ignore[type-arg]
        import json

        out = self.dstack("ps", "--json", *(["-a"] if all_runs else []), check=True).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def last_run(self) -> dict:  # type: ignore[type-arg]
        return self.ps()[0]

    def inspect(self, run: str) -> dict:  # type: ignore[type-arg]
        import json

        return json.loads(self.dstack("inspect", run, "--json", check=True).stdout)  # type: ignore[no-any-return]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    home = tmp_path / "home"
    monkeypatch.setenv("DSTACK_HOME", str(home))
    made = Project(tmp_path / "repo", home)
    yield made
    made.cleanup()


LIVE_MOUNT = """
workflows:
  - name: live
    commands:
      - sleep 0.5
      - date +%s.%N > ckpt/written-at
      - sleep 30
    artifacts: [{path: ckpt, mount: true}]
"""


def meet(folder: Path, me: str, other: str, within: int = 60) -> str:
    """A job command that shows two jobs run at the same time, without timing them: it marks
    its arrival in ``folder``, waits up to ``within`` seconds for the other's mark, and prints
    'met OTHER' only if it came. Jobs run one after the other never meet."""
    mine, theirs = shlex.quote(f"{folder}/{me}"), shlex.quote(f"{folder}/{other}")
    return (
        f"touch {mine}; for i in $(seq {within * 10}); do [ -e {theirs} ] && break; "
        f"sleep 0.1; done; [ -e {theirs} ] && echo met {other}"
    )


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10,
    interval: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll until ``predicate`` returns something truthy and return it; fail on timeout.
    The one way tests and fixtures wait: on a condition, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def waiter() -> Iterator[Callable[..., object]]:
    yield wait_for


@pytest.fixture(scope="session")
def sshd_local() -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1 with its own throw-away user (removed after)."""
    from sshd import make_server

    server = make_server("local", "dstacktest0")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_hosts() -> Iterator[list[SSHServer]]:
    """Two more servers, each in its own network namespace with its own /24 address and user;
    the names carry this session's tag (sshd.SESSION), and all of it is removed after."""
    from sshd import Namespace, add_netns, make_server

    servers: list[SSHServer] = []
    spaces: list[Namespace] = []
    try:
        for index in (1, 2):
            spaces.append(add_netns(index))
            servers.append(
                make_server(
                    f"h{index}", f"dstacktest{index}", spaces[-1].inside, netns=spaces[-1].name
                )
            )
        yield servers
    finally:
        for server in servers:
            server.stop()
        for space in spaces:
            space.delete()


@dataclass(frozen=True)
class AgentLab:
    """A host that reaches the bucket directly, as a cloud VM reaches its region's bucket."""

    host: SSHServer  # sshd in its own network namespace
    s3: SeaweedS3  # listening on the outside end of that namespace's veth pair


@pytest.fixture(scope="session")
def agent_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentLab]:
    """A namespace host (index 5: sshd_hosts take 1-2, test_concurrency 3, test_agent_stores
    4) and a SeaweedFS it can reach (TEST-SERVICES.md: "Hosts that reach the
    bucket directly"); this machine reaches the server at the same address, so presigned
    requests carry one Host everywhere. Everything is removed after."""
    from buckets import start_seaweedfs
    from sshd import add_netns, make_server

    space = add_netns(5)
    server: SSHServer | None = None
    s3: SeaweedS3 | None = None
    try:
        server = make_server("h5", "dstacktest5", space.inside, netns=space.name)
        s3 = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-lab"), ip=space.outside)
        yield AgentLab(server, s3)
    finally:
        if s3 is not None:
            s3.stop()
        if server is not None:
            server.stop()
        space.delete()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3 server: SeaweedFS (`weed mini`) on 127.0.0.1, with a full and a read-only key."""
    from buckets import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Azure Blob Storage's emulator, Azurite, from npm."""
    from buckets import start_azurite

    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Google Cloud Storage server: fake-gcs-server (from PyPI), with generations."""
    from buckets import start_gcs_emulator

    server = start_gcs_emulator(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()
