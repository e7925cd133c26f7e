"""Own servers over SSH: a trivial job on a pool host next to `ssh host true`, and pulling a
500 MB artifact tree from the host into the store next to `rsync -e ssh` of the same tree.

Starts its own OpenSSH server on 127.0.0.1 with a throw-away user (needs root and Debian's
openssh-server, like the tests). Targets: under 1 s of overhead over `ssh host true`; the
artifact sync at least as fast as rsync.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import DSTACK, env_with, print_table, run_checked, seconds, time_command  # noqa: E402
from sshd import make_server  # noqa: E402

TREE_FILES, TREE_FILE_MB = 50, 10


def main() -> None:
    server = make_server("bench", "dstackbench")
    work = Path(tempfile.mkdtemp(prefix="dstack-bench-ssh-"))
    try:
        ssh = [
            "ssh",
            "-i",
            str(server.key),
            "-p",
            str(server.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{server.user}@{server.host}",
        ]
        env = env_with(DSTACK_HOME=str(work / "home"))
        project = work / "project"
        (project / ".dstack").mkdir(parents=True)
        (project / ".dstack" / "workflows.yaml").write_text(
            "workflows:\n  - name: hello\n    commands: [echo hello]\n"
        )
        run_checked(
            [
                DSTACK,
                "pool",
                "add",
                "box",
                "--host",
                server.host,
                "--port",
                str(server.port),
                "--user",
                server.user,
                "--identity-file",
                server.key,
            ],
            env=env,
        )
        bare = time_command([*ssh, "true"])
        job = time_command([DSTACK, "run", "hello", "--host", "box"], cwd=project, env=env)
        print_table(
            "Trivial job on a pool host (loopback sshd), wall seconds (7 runs after 1 warm-up)",
            ["command", "median", "min"],
            [
                ["ssh host true", seconds(bare.median), seconds(bare.min)],
                ["dstack run hello --host box", seconds(job.median), seconds(job.min)],
            ],
        )
        overhead = job.median - bare.median
        print(
            f"dstack overhead over ssh: {overhead:.3f} s; target < 1 s: {'met' if overhead < 1 else 'missed'}\n"
        )
        sync(server, ssh, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def sync(server: object, ssh: list[str], work: Path) -> None:
    """Pull a fresh random tree both ways into empty targets; dstack hashes on the host too."""
    from dstack.execution.ssh import SSHExecutor
    from dstack.home import Home
    from dstack.pool import PoolHost
    from dstack.ssh.connect import HostAddress, connect
    from dstack.ssh.probe import probe
    from dstack.storage.manifest import StatCache
    from dstack.storage.store import Store

    user, host, port, key = server.user, server.host, server.port, str(server.key)  # type: ignore[attr-defined]
    run_checked(
        [
            *ssh,
            f"mkdir -p tree/work/out && for i in $(seq 1 {TREE_FILES}); do "
            f"head -c {TREE_FILE_MB}M /dev/urandom > tree/work/out/f$i; done",
        ]
    )
    home = Home(work / "sync-home")
    home.root.mkdir()
    address = HostAddress("box", host, port, user, key)
    with connect(address, home.root / "known_hosts", pin=True) as conn:
        facts = probe(conn)
    executor = SSHExecutor(
        PoolHost(address, 1, facts, time.time()), Store.open(home), home.root / "known_hosts"
    )
    began = time.perf_counter()
    entries = executor.collect(f"{facts.home}/tree", ["out"], StatCache())
    dstack_s = time.perf_counter() - began
    began = time.perf_counter()
    again = executor.collect(f"{facts.home}/tree", ["out"], StatCache())
    resync_s = time.perf_counter() - began
    target = work / "rsync-target"
    began = time.perf_counter()
    run_checked(
        ["rsync", "-a", "-e", " ".join(ssh[:-1]), f"{user}@{host}:tree/work/out/", str(target)]
    )
    rsync_s = time.perf_counter() - began
    total_mb = TREE_FILES * TREE_FILE_MB
    assert len(entries) == len(again) == TREE_FILES
    print_table(
        f"Pulling a {total_mb} MB tree ({TREE_FILES} files) from the host, wall seconds (one cold run each)",
        ["tool", "seconds", "MB/s"],
        [
            ["rsync -a -e ssh", seconds(rsync_s), f"{total_mb / rsync_s:.0f}"],
            ["dstack artifact sync", seconds(dstack_s), f"{total_mb / dstack_s:.0f}"],
            ["dstack re-sync, unchanged", seconds(resync_s), "-"],
        ],
    )
    verdict = "met" if dstack_s <= rsync_s else "missed"
    print(
        f"dstack sync {dstack_s:.2f} s vs rsync {rsync_s:.2f} s: target (at least as fast): {verdict}"
    )
    run_checked([*ssh, "rm -rf tree"])


if __name__ == "__main__":
    main()
