"""Jobs on own servers over real SSH: placement, execution, logs, stop, artifacts, secrets."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project, meet, wait_for
from sshd import SSHServer


def home_id(project: Project) -> str:
    """The home's folder of job folders on a host is named by this id."""
    return (project.home / "id").read_text().strip()


def pool_add(project: Project, name: str, server: SSHServer, *extra: str) -> None:
    done = project.dstack(*server.pool_add_args(name), *extra)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def pooled(project: Project, sshd_hosts: list[SSHServer]) -> Project:
    """A project whose pool holds the two namespace hosts h1 and h2."""
    pool_add(project, "h1", sshd_hosts[0])
    pool_add(project, "h2", sshd_hosts[1])
    return project


def test_job_runs_on_the_named_host_with_artifacts_and_logs(
    pooled: Project, sshd_hosts: list[SSHServer]
) -> None:
    pooled.workflows("""
        workflows:
          - name: remote
            commands:
              - echo "on $(whoami) in $(pwd | sed 's|/home/[^/]*/||')"
              - cat data.txt
              - mkdir -p out && echo result > out/r.txt
            artifacts: [out]
    """)
    pooled.write("data.txt", "from the snapshot\n")
    done = pooled.dstack("run", "remote", "--host", "h1")
    assert done.returncode == 0, done.stderr
    run = pooled.last_run()["name"]
    runs = f".dstack/runs/{home_id(pooled)}"  # each home its own folder: they may share a user
    where = f"on {sshd_hosts[0].user} in {runs}/{run}/remote/work"
    assert done.stdout == f"{where}\nfrom the snapshot\n"
    job = pooled.inspect(run)["jobs"][0]
    assert (job["backend"], job["host"]) == ("ssh", "h1")
    assert pooled.dstack("logs", run, check=True).stdout == done.stdout
    files = json.loads(pooled.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert [f["path"] for f in files["remote"]["files"]] == ["out/r.txt"]
    assert sshd_hosts[0].ssh(f"test -e ~/{runs}/{run} || echo gone").strip() == "gone", (
        "the host's run folder is removed once its artifacts are safe"
    )


@pytest.fixture
def meeting_point() -> Iterator[Path]:
    """A folder both host users can write to (the hosts share this machine's file system)."""
    folder = Path(tempfile.mkdtemp(prefix="dstack-meet-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def test_jobs_on_two_hosts_run_in_parallel(
    pooled: Project, sshd_hosts: list[SSHServer], meeting_point: Path
) -> None:
    pooled.workflows(f"""
        workflows:
          - {{name: a, commands: [{json.dumps(meet(meeting_point, "a", "b"))}, whoami]}}
          - {{name: b, commands: [{json.dumps(meet(meeting_point, "b", "a"))}, whoami]}}
          - {{name: both, depends-on: [a, b], commands: [echo joined]}}
    """)
    done = pooled.dstack("run", "both", "--backend", "ssh")
    assert done.returncode == 0, done.stderr
    lines: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        job, _, text = line.partition(" | ")
        lines.setdefault(job, []).append(text)
    assert (lines["a"][0], lines["b"][0]) == ("met b", "met a"), "a and b ran at the same time"
    assert {lines["a"][-1], lines["b"][-1]} == {s.user for s in sshd_hosts}, "on different hosts"


def test_nothing_fits_lists_each_host_and_why(pooled: Project) -> None:
    pooled.workflows(
        "workflows:\n  - {name: huge, commands: [x], resources: {gpu: {count: 1, name: A100}}}\n"
    )
    done = pooled.dstack("run", "huge")
    assert done.returncode == 1 and "No host fits workflow 'huge'" in done.stderr
    for name in ("local", "h1", "h2"):
        assert f"  {name} (" in done.stderr
    assert "1 GPU A100 requested, 0 fitting (no GPUs)" in done.stderr
    unknown = pooled.dstack("run", "huge", "--host", "h9")
    assert unknown.returncode == 1 and "No host named 'h9'" in unknown.stderr


def test_busy_host_makes_the_run_wait_or_fail_with_no_wait(pooled: Project) -> None:
    pooled.workflows(
        "workflows:\n  - {name: hold, commands: [echo started, sleep 30]}\n"
        "  - {name: quick, commands: [echo quick]}\n"
    )
    pooled.dstack("run", "hold", "--host", "h1", "-d", check=True)
    holder = pooled.last_run()["name"]
    wait_for(lambda: "started" in pooled.dstack("logs", holder).stdout, timeout=30)
    refused = pooled.dstack("run", "quick", "--host", "h1", "--no-wait")
    assert refused.returncode == 1 and "busy" in refused.stdout + refused.stderr
    waiting = pooled.popen("run", "quick", "--host", "h1")
    waiter = wait_for(
        lambda: next(
            (
                r
                for r in pooled.ps()
                if r["name"] != holder and r["status"] == "running" and r["workflow"] == "quick"
            ),
            None,
        )
    )
    job = wait_for(
        lambda: [j for j in pooled.inspect(waiter["name"])["jobs"] if j["status"] == "waiting"]
    )
    assert "waiting for a free host: h1" in job[0]["error"]
    pool = json.loads(pooled.dstack("pool", "list", "--json", check=True).stdout)
    assert {h["name"]: h["status"] for h in pool} == {"h1": "busy", "h2": "free"}
    pooled.dstack("stop", holder, "-x", check=True)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out == "quick\n", err
    assert "waiting for a free host (h1 busy)" in err


def test_stop_kills_the_whole_process_group_on_the_host(
    pooled: Project, sshd_hosts: list[SSHServer]
) -> None:
    pooled.workflows("""
        workflows:
          - name: tree
            commands:
              - (sleep 300 & echo $! > ~/dstack-child-$DSTACK_RUN; wait) &
              - echo started
              - sleep 300
    """)
    pooled.dstack("run", "tree", "--host", "h2", "-d", check=True)
    run = pooled.last_run()["name"]
    wait_for(lambda: "started" in pooled.dstack("logs", run).stdout, timeout=30)
    child = sshd_hosts[1].ssh(f"cat ~/dstack-child-{run}").strip()
    assert sshd_hosts[1].ssh(f"kill -0 {child} && echo alive").strip() == "alive"
    pooled.dstack("stop", run, check=True)
    assert pooled.last_run()["status"] == "stopped"
    assert wait_for(
        lambda: sshd_hosts[1].ssh(f"kill -0 {child} 2>/dev/null || echo dead").strip() == "dead"
    )


def test_mount_artifact_from_host_is_in_the_store_while_running(pooled: Project) -> None:
    pooled.workflows("""
        workflows:
          - name: live
            commands: [sleep 1, echo step > ckpt/step.txt, sleep 30]
            artifacts: [{path: ckpt, mount: true}]
    """)
    pooled.dstack("run", "live", "--host", "h1", "-d", check=True)
    run = pooled.last_run()["name"]

    def listed() -> bool:
        done = pooled.dstack("artifacts", "list", run, "--json")
        return done.returncode == 0 and "ckpt/step.txt" in done.stdout

    wait_for(listed, timeout=25, interval=0.2)  # the job goes on for 30 s after writing it
    assert pooled.last_run()["status"] == "running", "saved while the job runs"
    pooled.dstack("stop", run, "-x", check=True)


def test_secrets_are_masked_for_host_jobs_too(pooled: Project) -> None:
    done = pooled.dstack("secrets", "add", "TOKEN", "hush-hush-123", check=True)
    assert done.returncode == 0
    pooled.workflows("workflows:\n  - {name: s, commands: ['echo token=$TOKEN']}\n")
    ran = pooled.dstack("run", "s", "--host", "h2", check=True)
    assert ran.stdout == "token=******\n"


def test_python_provider_builds_its_venv_on_the_host(
    pooled: Project, sshd_hosts: list[SSHServer]
) -> None:
    pooled.workflows(
        "workflows:\n  - {name: py, provider: python, script: s.py, requirements: req.txt}\n"
    )
    pooled.write("s.py", "import sys\nprint(sys.prefix.split('/.dstack/')[1].split('/')[0])\n")
    pooled.write("req.txt", "# nothing to install\n")
    first = pooled.dstack("run", "py", "--host", "h1", check=True, timeout=300)
    assert first.stdout.splitlines()[-1] == "venvs"
    assert "building the Python environment" in first.stdout
    again = pooled.dstack("run", "py", "--host", "h1", check=True)
    assert again.stdout == "venvs\n"


def test_dropped_connection_loses_and_doubles_no_line(
    pooled: Project, sshd_hosts: list[SSHServer]
) -> None:
    pooled.workflows("""
        workflows:
          - name: count
            commands: ['for i in $(seq 1 40); do echo "line $i"; sleep 0.1; done']
    """)
    proc = pooled.popen("run", "count", "--host", "h2")
    run = wait_for(
        lambda: next((r["name"] for r in pooled.ps() if r["status"] == "running"), None), timeout=30
    )
    wait_for(lambda: "line 3\n" in pooled.dstack("logs", str(run)).stdout, timeout=30)
    log = sshd_hosts[1].home / ".dstack" / "runs" / home_id(pooled) / str(run) / "count" / "log"
    # down while the job writes lines 4 to 15 at least: all must arrive once it is back
    sshd_hosts[1].restart_dropping_connections(down_until=lambda: " line 15\n" in log.read_text())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == "".join(f"line {i}\n" for i in range(1, 41))


def test_detached_host_job_can_be_attached_after_its_supervisor_is_gone(pooled: Project) -> None:
    import os
    import signal

    pooled.workflows("""
        workflows:
          - name: slow
            commands: ['for i in $(seq 1 30); do echo "tick $i"; sleep 0.1; done']
            artifacts: [out]
    """)
    pooled.dstack("run", "slow", "--host", "h1", "-d", check=True)
    run = pooled.last_run()["name"]
    wait_for(lambda: "tick 2\n" in pooled.dstack("logs", run).stdout, timeout=30)
    home_db = __import__("sqlite3").connect(pooled.home / "state.db")
    pid = home_db.execute("SELECT supervisor_pid FROM runs WHERE name = ?", (run,)).fetchone()[0]
    os.kill(pid, signal.SIGKILL)
    attach = pooled.dstack("attach", run, timeout=120)
    assert attach.returncode == 0, attach.stderr
    assert attach.stdout == "".join(f"tick {i}\n" for i in range(1, 31))
    assert pooled.last_run()["status"] == "done"


@pytest.mark.parametrize("transfer", ["rsync", "sftp"])
def test_artifact_sync_moves_only_changed_files(
    transfer: str,
    sshd_local: SSHServer,
    tmp_path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """Both transfers (rsync when both ends have it, SFTP otherwise) against a real host."""
    import hashlib

    from dstack.backends.ssh.pool import PoolHost
    from dstack.execution.ssh import SSHExecutor
    from dstack.home import Home
    from dstack.ssh.connect import HostAddress, connect
    from dstack.ssh.probe import probe
    from dstack.storage.manifest import StatCache
    from dstack.storage.store import Store

    sshd_local.ssh(
        "rm -rf job && mkdir -p job/work/out/sub && echo one > job/work/out/a.txt && "
        "echo two > job/work/out/sub/b.txt && ln -s a.txt job/work/out/link"
    )
    a_minute_ago = time.time() - 60  # settled files: a rewrite gets a different mtime
    for path in (sshd_local.home / "job" / "work" / "out").rglob("*"):
        os.utime(path, (a_minute_ago, a_minute_ago), follow_symlinks=False)
    home = Home(tmp_path / "home")
    home.root.mkdir()
    address = HostAddress(
        "box", sshd_local.host, sshd_local.port, sshd_local.user, str(sshd_local.key)
    )
    with connect(address, home.root / "known_hosts", pin=True) as conn:
        facts = probe(conn)
    store = Store.open(home)
    executor = SSHExecutor(
        PoolHost(address, 1, facts, 0.0),
        store,
        home.root / "known_hosts",
        home,
        transfer=transfer,
    )
    job_dir, cache = f"{facts.home}/job", StatCache()
    first = {e.path: e for e in executor.collect(job_dir, ["out"], cache)}
    assert (
        set(first) == {"out/a.txt", "out/sub/b.txt", "out/link"}
        and first["out/link"].link == "a.txt"
    )
    assert first["out/a.txt"].sha256 == hashlib.sha256(b"one\n").hexdigest()
    blobs = {p.name for p in (home.store_dir / "blobs").rglob("*") if p.is_file()}
    assert len(blobs) == 2

    moved: list[str] = []
    real_get, real_run = executor.remote.get, __import__("subprocess").run
    monkeypatch.setattr(
        executor.remote,
        "get",
        lambda remote, local: (moved.append(remote), real_get(remote, local)),
    )

    def counting_run(args, **kwargs):  # type: ignore[no-untyped-def]
        done = (
            real_run([*args[:1], "--out-format=%n", *args[1:]], **kwargs)
            if args[0] == "rsync"
            else real_run(args, **kwargs)
        )
        if args[0] == "rsync":
            moved.extend(
                line for line in done.stdout.splitlines() if line and not line.endswith("/")
            )
        return done

    monkeypatch.setattr("dstack.execution.ssh.subprocess.run", counting_run)
    sshd_local.ssh("echo changed > job/work/out/sub/b.txt")
    second = {e.path: e for e in executor.collect(job_dir, ["out"], cache)}
    assert second["out/sub/b.txt"].sha256 == hashlib.sha256(b"changed\n").hexdigest()
    assert second["out/a.txt"] == first["out/a.txt"]
    assert [m.rsplit("/", 1)[-1] for m in moved] == ["b.txt"], "only the changed file moved"


def test_hosts_from_config_join_the_pool(project: Project, sshd_hosts: list[SSHServer]) -> None:
    server = sshd_hosts[0]
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(f"""
backends:
  local: {{enabled: false}}
  ssh:
    keep_run_dirs: true
    hosts:
      - name: cfg1
        host: {server.host}
        user: {server.user}
        identity_file: {server.key}
""")
    project.workflows("workflows:\n  - {name: where, commands: [whoami]}\n")
    done = project.dstack("run", "where")
    assert done.returncode == 0 and done.stdout == f"{server.user}\n", done.stderr
    run = project.last_run()["name"]
    assert project.inspect(run)["jobs"][0]["host"] == "cfg1"
    pool = json.loads(project.dstack("pool", "list", "--json", check=True).stdout)
    assert [(h["name"], h["status"]) for h in pool] == [("cfg1", "free")]
    kept = f"~/.dstack/runs/{home_id(project)}/{run}/where/work"
    assert server.ssh(f"test -d {kept} && echo kept").strip() == "kept"


def test_bad_config_is_a_clear_error(project: Project) -> None:
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text("backends:\n  ssh:\n    hostz: []\n")
    project.workflows("workflows:\n  - {name: a, commands: [x]}\n")
    done = project.dstack("run", "a")
    assert done.returncode == 2 and "config.yaml:3: field 'backends.ssh.hostz'" in done.stderr
    assert "did you mean 'hosts'" in done.stderr and "Traceback" not in done.stderr


def test_two_processes_never_get_the_same_host_slot(pooled: Project) -> None:
    pooled.workflows("workflows:\n  - {name: hold, commands: [echo got it, sleep 3]}\n")
    racers = [pooled.popen("run", "hold", "--host", "h2", "--no-wait") for _ in range(4)]
    results = [(p.wait(timeout=120), p.communicate()) for p in racers]
    winners = [out for code, (out, _) in results if code == 0]
    losers = [err for code, (_, err) in results if code != 0]
    assert len(winners) == 1 and winners[0] == "got it\n"
    assert len(losers) == 3 and all("busy" in err for err in losers)


def test_a_dep_stored_in_chunks_is_placed_whole_on_the_host(
    pooled: Project, s3_server: object
) -> None:
    from test_buckets import new_bucket, use_s3, write_large

    use_s3(pooled, s3_server, new_bucket())  # type: ignore[arg-type]
    sha = write_large(pooled.root / "weights" / "model.bin")
    pooled.dstack("tags", "add", "w", "-a", "weights", check=True)
    listed = json.loads(pooled.dstack("artifacts", "list", ":w", "--json", check=True).stdout)
    assert len(listed["upload"]["files"][0]["chunks"]) == 2
    pooled.workflows("""
        workflows:
          - name: use
            deps: [{tag: w}]
            commands: [sha256sum weights/model.bin]
    """)
    done = pooled.dstack("run", "use", "--host", "h1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == sha
