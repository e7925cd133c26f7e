"""Faults leave dstack usable and lose nothing: an unreachable bucket or pool host, malformed
records in the store, a run whose finishing fails (an unreadable artifact, a full DSTACK_HOME,
the store going down), temporary files of killed processes, a killed or damaged state database.

Real parts throughout: a real S3 server behind a TCP relay that the test cuts, real sshd hosts,
a real tmpfs for a full disk, a process without the capabilities that let root read anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buckets import SeaweedS3
from conftest import Project, wait_for
from sshd import SSHServer, free_port, make_server

# --- helpers ----------------------------------------------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.1 in front of a server: ``cut()`` drops every connection and
    refuses new ones, as a network outage would; ``mend()`` listens again on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.mend()

    def mend(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()


@pytest.fixture
def relayed_store(project: Project, s3_server: SeaweedS3) -> Iterator[Relay]:
    """The project's store is a fresh bucket on the real S3 server, reached through a relay."""
    relay = Relay(s3_server.port)
    endpoint = f"http://127.0.0.1:{relay.port}"
    project.extra_env = {**s3_server.env(), "AWS_ENDPOINT_URL_S3": endpoint}
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    project.dstack("init", "--store", f"s3://{bucket}/team", "--endpoint-url", endpoint, check=True)
    yield relay
    relay.cut()


def job(project: Project, run: str) -> dict:  # type: ignore[type-arg]
    return project.inspect(run)["jobs"][0]  # type: ignore[no-any-return]


def assert_still_usable(project: Project, run: str, log_text: str) -> None:
    """ps, logs, stop and rm all work on a run whose finishing failed."""
    listed = {r["name"]: r for r in project.ps()}
    assert listed[run]["status"] == "failed"
    assert project.dstack("logs", run, check=True).stdout == log_text
    stopped = project.dstack("stop", run, check=True)
    assert f"Run {run} is already failed" in stopped.stderr
    project.dstack("rm", run, check=True)
    assert run not in {r["name"] for r in project.ps()}


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


# --- an unreachable bucket --------------------------------------------------------------------


def test_unreachable_bucket_leaves_ps_logs_and_inspect_working(
    project: Project, relayed_store: Relay
) -> None:
    project.workflows("workflows:\n  - {name: hi, commands: [echo hi], artifacts: [out]}\n")
    project.dstack("run", "hi", check=True)
    run = project.last_run()["name"]
    relayed_store.cut()
    listed = project.dstack("ps")
    assert listed.returncode == 0 and run in listed.stdout, listed.stderr
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("dstack: warning")]
    assert len(warnings) == 1 and "unreachable" in warnings[0]
    assert "showing this home's runs only" in warnings[0]
    no_traceback(listed)
    assert project.dstack("logs", run, check=True).stdout == "hi\n"
    assert project.inspect(run)["status"] == "done"


def test_store_going_down_before_a_run_ends_fails_it_with_the_reason(
    project: Project, relayed_store: Relay, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    project.workflows(f"""
        workflows:
          - name: late
            commands:
              - mkdir -p out && echo result > out/r.txt
              - echo waiting
              - while [ ! -e {go} ]; do sleep 0.05; done
            artifacts: [out]
    """)
    project.dstack("run", "late", "-d", check=True)
    run = project.last_run()["name"]
    log = project.home / "runs" / run / "late" / "log"
    wait_for(lambda: log.exists() and "waiting" in log.read_text(), 30)
    relayed_store.cut()
    go.touch()
    wait_for(lambda: project.last_run()["status"] == "failed", 120, interval=0.2)
    error = job(project, run)["error"]
    assert "its artifacts could not be saved" in error and "unreachable" in error, error
    kept = project.home / "runs" / run / "late" / "work" / "out" / "r.txt"
    assert kept.read_text() == "result\n" and str(kept.parents[2]) in error, "nothing is lost"
    told = (project.home / "runs" / run / "dstack.log").read_text()
    assert "its artifacts could not be saved" in told and f"run {run} failed" in told
    relayed_store.mend()
    assert_still_usable(project, run, "waiting\n")


# --- a malformed record in the store ---------------------------------------------------------


def test_malformed_run_records_in_the_store_are_skipped_with_a_warning(
    project: Project, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    project.dstack("init", "--store", shared.as_uri(), check=True)
    project.workflows("workflows:\n  - {name: mine, commands: [echo mine]}\n")
    project.dstack("run", "mine", check=True)
    good = {
        "name": "teammate-run-1",
        "workflow": "train",
        "status": "done",
        "created_at": time.time(),
        "finished_at": time.time(),
        "exit_code": 0,
        "tag": None,
        "owner": "ada@lab",
        "manifests": {},
    }
    runs = shared / "runs"
    (runs / "teammate-run-1.json").write_text(json.dumps(good))
    (runs / "junk-run-2.json").write_bytes(b"{not json\xff")
    (runs / "typed-run-3.json").write_text(
        json.dumps({**good, "name": "typed-run-3", "created_at": "yesterday"})
    )
    (runs / "list-run-4.json").write_text("[1, 2]")
    (runs / "alias-run-5.json").write_text(json.dumps({**good, "name": "teammate-run-1"}))
    listed = project.dstack("ps", "-a")
    assert listed.returncode == 0, listed.stderr
    no_traceback(listed)
    assert "teammate-run-1 (ada)" in listed.stdout and "mine" in listed.stdout
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("dstack: warning")]
    for key, why in [
        ("runs/junk-run-2.json", "is not JSON"),
        ("runs/typed-run-3.json", "has str as 'created_at'"),
        ("runs/list-run-4.json", "is a JSON list"),
        ("runs/alias-run-5.json", "names another run"),
    ]:
        assert any(key in w and why in w for w in warnings), (key, warnings)
    assert len(warnings) == 4
    logs = project.dstack("logs", "typed-run-3")
    assert logs.returncode == 1 and "runs/typed-run-3.json" in logs.stderr
    no_traceback(logs)


# --- a run whose finishing fails ---------------------------------------------------------------


def test_unreadable_artifact_fails_the_run_with_the_reason(project: Project) -> None:
    """Root reads any file, so dstack runs without the capabilities that allow it."""
    project.workflows("""
        workflows:
          - name: locked
            commands:
              - mkdir -p out && echo fine > out/ok.txt && echo hidden > out/locked.txt
              - chmod 000 out/locked.txt
              - echo made
            artifacts: [out]
    """)
    no_caps = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    done = subprocess.run(
        [*no_caps, sys.executable, "-m", "dstack", "run", "locked"],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == "made\n", done.stderr
    no_traceback(done)
    run = project.last_run()["name"]
    error = job(project, run)["error"]
    assert "its artifacts could not be saved: Cannot read 'out/locked.txt': permission" in error
    assert "out/locked.txt" in error and "locked failed (its artifacts" in done.stderr
    work = project.home / "runs" / run / "locked" / "work" / "out"
    assert (work / "ok.txt").read_text() == "fine\n", "the files stay where the job left them"
    assert_still_usable(project, run, "made\n")


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """A DSTACK_HOME on a 2 MB tmpfs of its own, to fill up."""
    home = tmp_path / "small-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(home)], check=True)
    try:
        yield home
    finally:
        subprocess.run(["umount", str(home)], check=True)


def test_full_dstack_home_fails_the_run_with_the_reason(project: Project, small_home: Path) -> None:
    full = Project(project.root, small_home)
    try:
        full.workflows("""
            workflows:
              - name: big
                commands: [mkdir -p out, head -c 1200000 /dev/urandom > out/big.bin, echo wrote]
                artifacts: [out]
        """)
        done = full.dstack("run", "big")
        assert done.returncode == 1 and done.stdout == "wrote\n", done.stderr
        no_traceback(done)
        run = full.last_run()["name"]
        error = job(full, run)["error"]
        assert "its artifacts could not be saved: no space left on this machine" in error
        assert (small_home / "runs" / run / "big" / "work" / "out" / "big.bin").stat().st_size
        assert_still_usable(full, run, "wrote\n")
    finally:
        full.cleanup()


# --- pool hosts --------------------------------------------------------------------------------


def test_an_unreachable_pool_host_is_skipped_and_marked(
    project: Project, sshd_local: SSHServer
) -> None:
    down = make_server("down", "dstackdown")
    try:
        assert project.dstack(*down.pool_add_args("a-down")).returncode == 0
    finally:
        down.stop()
    assert project.dstack(*sshd_local.pool_add_args("b-up")).returncode == 0
    project.home.joinpath("config.yaml").write_text(f"""
backends:
  local: {{enabled: false}}
  ssh:
    hosts:
      - {{name: c-never, host: 127.0.0.1, port: {free_port()}, user: nobody}}
""")
    project.workflows("workflows:\n  - {name: where, commands: [whoami]}\n")
    done = project.dstack("run", "where")
    assert done.returncode == 0 and done.stdout == f"{sshd_local.user}\n", done.stderr
    no_traceback(done)
    assert "pool host a-down is unreachable" in done.stderr
    assert "host c-never from config.yaml was not added" in done.stderr
    assert job(project, project.last_run()["name"])["host"] == "b-up"
    pool = json.loads(project.dstack("pool", "list", "--json", check=True).stdout)
    assert [(h["name"], h["status"]) for h in pool] == [("a-down", "unreachable"), ("b-up", "free")]
    pinned = project.dstack("run", "where", "--host", "a-down")
    assert pinned.returncode == 1 and "answers: a-down" in pinned.stderr, pinned.stderr
    no_traceback(pinned)


@pytest.fixture
def tiny_host(project: Project, sshd_local: SSHServer) -> Iterator[Path]:
    """Pool host 'tiny' (the loopback sshd) whose ~/.dstack, where dstack keeps everything on
    the host, is a 1 MB tmpfs of its own; yields that folder."""
    assert project.dstack(*sshd_local.pool_add_args("tiny")).returncode == 0
    folder = sshd_local.home / ".dstack"
    folder.mkdir(exist_ok=True)
    shutil.chown(folder, sshd_local.user, sshd_local.user)
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(folder)]
    subprocess.run(mount, check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def assert_failed_run_usable(project: Project, run: str, log_start: str) -> None:
    """ps, logs, stop and rm all work on a run that failed on a host."""
    assert {r["name"]: r["status"] for r in project.ps()}[run] == "failed"
    logs = project.dstack("logs", run, check=True)
    assert logs.stdout.startswith(log_start)
    assert f"Run {run} is already failed" in project.dstack("stop", run, check=True).stderr
    project.dstack("rm", run, check=True)
    assert run not in {r["name"] for r in project.ps()}


@pytest.mark.parametrize(
    "size",
    [
        3_000_000,  # its upload to the host's blob cache fails (SFTP says only "Failure")
        600_000,  # the upload fits, the job's working copy next to it does not (cp fails)
    ],
)
def test_a_snapshot_that_does_not_fit_on_the_host_says_no_space_left(
    project: Project, tiny_host: Path, size: int
) -> None:
    project.workflows("workflows:\n  - {name: w, commands: [echo never]}\n")
    project.root.joinpath("data.bin").write_bytes(os.urandom(size))
    done = project.dstack("run", "w", "--host", "tiny")
    assert done.returncode != 0 and done.stdout == "", done.stderr
    no_traceback(done)
    assert "no space left on tiny (" in done.stderr, done.stderr
    run = project.last_run()["name"]
    assert "no space left on tiny (" in job(project, run)["error"]
    left = [p.name for p in tiny_host.joinpath("blobs").iterdir()]
    assert not [n for n in left if n.endswith(".part")], f"the partial upload is given back: {left}"
    assert_failed_run_usable(project, run, "")


def test_a_job_that_fills_the_host_disk_fails_with_the_reason(
    project: Project, tiny_host: Path
) -> None:
    project.workflows("""
        workflows:
          - name: fill
            commands: [mkdir -p out, echo start, head -c 3000000 /dev/urandom > out/big.bin]
            artifacts: [out]
    """)
    done = project.dstack("run", "fill", "--host", "tiny")
    assert done.returncode != 0 and done.stdout.startswith("start\n"), done.stderr
    no_traceback(done)
    run = project.last_run()["name"]
    error = job(project, run)["error"]
    assert error.startswith("no space left on tiny ("), error
    listed = json.loads(project.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert [f["path"] for f in listed["fill"]["files"]] == ["out/big.bin"], "what it wrote is kept"
    assert_failed_run_usable(project, run, "start\n")


# --- temporary files of killed processes ---------------------------------------------------------


def test_gc_removes_temporary_files_that_killed_processes_left(project: Project) -> None:
    project.workflows(
        "workflows:\n  - {name: a, commands: [mkdir -p out, echo a > out/a], artifacts: [out]}\n"
    )
    project.dstack("run", "a", check=True)
    blobs = project.home / "store" / "blobs"
    kept = sorted(p for p in blobs.rglob("*") if p.is_file())
    old = time.time() - 3600
    left = [
        blobs / "ab" / ".tmp-1f2e3d4c",  # an object store write killed before its rename
        project.home / "cache" / "blobs" / "blobs" / ".tmp-9a8b7c6d",
        project.home / "store" / ".dstack-x1y2z3",  # a blob copy killed half-way
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half of something")
        os.utime(path, (old, old))
    fresh = blobs / "cd" / ".tmp-in-use"  # a live process is writing it now
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"being written")
    dry = project.dstack("gc", "--dry-run", check=True)
    assert "Would remove 3 temporary files" in dry.stderr and all(p.exists() for p in left)
    done = project.dstack("gc", "--json", check=True)
    assert json.loads(done.stdout) == [] and "Removed 3 temporary files" in done.stderr
    assert not any(p.exists() for p in left) and fresh.exists()
    assert sorted(p for p in blobs.rglob("*") if p.is_file() and p != fresh) == kept
    assert "temporary" not in project.dstack("gc", check=True).stderr


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from dstack.atomic import write_text_atomic
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # killed before its rename
write_text_atomic(Path(sys.argv[1]), "{}")
"""


def test_gc_sweeps_dstack_home_but_never_a_jobs_own_files(project: Project) -> None:
    project.workflows("workflows:\n  - {name: a, commands: [echo a]}\n")
    project.dstack("run", "a", check=True)
    project.dstack("secrets", "add", "TOKEN", "s3cret", check=True)
    run, home = project.last_run()["name"], project.home
    secrets = home / "secrets.json"
    kept_secrets = secrets.read_bytes()
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(secrets)], env=project.env())
    assert killed.returncode == -signal.SIGKILL and secrets.read_bytes() == kept_secrets
    (left_by_kill,) = home.glob(".tmp-secrets.json.*")
    job_dir = home / "runs" / run / "a"
    stale = [
        left_by_kill,
        home / ".tmp-config.yaml.k3j4h5",
        home / "cache" / "plans" / ".tmp-0a1b2c.json.x8y9z0",
        home / "store" / "runs" / f".tmp-{run}.json.q1w2e3",
        job_dir / ".tmp-env.sh.r4t5y6",
    ]
    theirs = [  # a job's and pip's files: never dstack's to remove, however old
        job_dir / "work" / ".tmp-the-jobs-own",
        job_dir / "mirror" / "sub" / ".tmp-synced-from-the-host",
        home / "venvs" / "0123abcd" / "lib" / ".tmp-pip",
    ]
    old = time.time() - 1200
    for path in stale + theirs:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half")
        os.utime(path, (old, old))
    fresh = home / "cache" / ".tmp-shared-runs.json.in-use"  # a live process is writing it
    fresh.write_bytes(b"being written")

    dry = project.dstack("gc", "--dry-run", check=True)
    assert f"Would remove {len(stale)} temporary files" in dry.stderr, dry.stderr
    listed = {line.strip() for line in dry.stderr.splitlines() if line.startswith("  ")}
    assert listed == {str(p) for p in stale}
    assert all(p.exists() for p in [*stale, *theirs, fresh]), "a dry run removes nothing"

    done = project.dstack("gc", check=True)
    assert f"Removed {len(stale)} temporary files" in done.stderr, done.stderr
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in [*theirs, fresh])
    assert secrets.read_bytes() == kept_secrets, "the secrets the killed write left alone"
    assert "TOKEN" in project.dstack("secrets", "list", check=True).stdout
    assert project.dstack("logs", run, check=True).stdout == "a\n"


# --- the state database --------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from dstack.home import Home
from dstack.state.db import State
from dstack.state.records import NewJob
state = State(Home(Path(sys.argv[1])))
name = state.create_run(
    workflow="w", repo_dir="/", args=[], variables={}, tag=None, snapshot={"digest": "d"},
    jobs=[NewJob("w", {})],
)
print(name, flush=True)
for i in range(1, 10**9):
    state.update_job(name, "w", exit_code=i, error="x" * (i % 5000))
    print(i, flush=True)
"""


def test_state_database_survives_a_killed_writer(project: Project) -> None:
    project.home.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(project.home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        name = writer.stdout.readline().strip()
        last = 0
        while last < 300:
            last = int(writer.stdout.readline())
    finally:
        writer.send_signal(signal.SIGKILL)  # mid-transaction, most likely
        writer.communicate()
    with sqlite3.connect(project.home / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (saved,) = db.execute("SELECT exit_code FROM jobs WHERE run_name = ?", (name,)).fetchone()
    assert saved >= last, "every committed write is there"
    assert name in {r["name"] for r in project.ps()}


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def _torn_pages(db: Path) -> None:
    """Keep the first page (the schema) and overwrite the rest, as a torn disk write would."""
    data = bytearray(db.read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _torn_pages])
def test_damaged_state_database_gets_a_clear_error_and_a_way_back(
    project: Project, damage: object
) -> None:
    project.workflows("workflows:\n  - {name: a, commands: [echo a]}\n")
    for _ in range(3):
        project.dstack("run", "a", check=True)
    db = project.home / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(db)  # type: ignore[operator]
    bad = project.dstack("ps")
    assert bad.returncode == 1, bad.stderr
    no_traceback(bad)
    assert f"The state database {db} is damaged" in bad.stderr
    assert "dstack init --reset-state" in bad.stderr
    damaged = db.read_bytes()
    reset = project.dstack("init", "--reset-state", check=True)
    aside = min(project.home.glob("state.db.corrupt-*"), key=lambda p: len(p.name))  # not -wal
    assert aside.read_bytes() == damaged and str(aside) in reset.stderr, "the damaged file is kept"
    assert project.ps() == []
    project.dstack("run", "a", check=True)
    assert len(project.ps()) == 1
    again = project.dstack("init", "--reset-state", check=True)
    assert "is healthy; nothing was moved" in again.stderr


def test_hosts_routed_by_ssh_config_or_unknown_to_dns_are_left_to_ssh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick TCP check must not call a host down that only ssh knows how to reach."""
    from dstack.backends.ssh import backend as placement

    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host gpu-alias\n  HostName 127.0.0.1\nHost behind\n  ProxyJump bastion\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    placement._routed_by_ssh_config.cache_clear()
    try:
        assert placement._routed_by_ssh_config("gpu-alias")
        assert placement._routed_by_ssh_config("behind")
        assert not placement._routed_by_ssh_config("127.0.0.1")
    finally:
        placement._routed_by_ssh_config.cache_clear()
