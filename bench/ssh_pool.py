"""Own servers over SSH: a trivial job on a pool host next to `ssh host true`, and pulling a
500 MB artifact tree from the host into the store next to `rsync -e ssh` of the same tree.

Starts its own OpenSSH server on 127.0.0.1 with a throw-away user (needs root and Debian's
openssh-server, like the tests). Targets: under 1 s of overhead over `ssh host true`; the
artifact sync at least as fast as rsync.
"""

from __future__ import annotations

import shutil
import statistics
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
        ssh = server.ssh_argv()
        env = env_with(DSTACK_HOME=str(work / "home"))
        project = work / "project"
        (project / ".dstack").mkdir(parents=True)
        (project / ".dstack" / "workflows.yaml").write_text(
            "workflows:\n  - name: hello\n    commands: [echo hello]\n"
        )
        run_checked([DSTACK, *server.pool_add_args("box")], env=env)
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
    from dstack.backends.ssh.pool import PoolHost
    from dstack.execution.ssh import SSHExecutor
    from dstack.home import Home
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
    address = HostAddress("box", host, port, user, key)
    known_hosts = work / "known_hosts"
    with connect(address, known_hosts, pin=True) as conn:
        facts = probe(conn)
    pool_host = PoolHost(address, 1, facts, time.time())
    tree = f"{facts.home}/tree"
    rsync_cmd = ["rsync", "-a", "-e", " ".join(ssh[:-1]), f"{user}@{host}:tree/work/out/"]

    def dstack_sync(index: int, transfer: str) -> float:
        """Into a fresh store and mirror; the host's page cache is warm for every tool alike."""
        home = Home(work / f"{transfer}-{index}")
        home.root.mkdir()
        executor = SSHExecutor(pool_host, Store.open(home), known_hosts, home, transfer=transfer)
        began = time.perf_counter()
        assert len(executor.collect(tree, ["out"], StatCache())) == TREE_FILES
        return time.perf_counter() - began

    def rsync(index: int) -> float:
        began = time.perf_counter()
        run_checked([*rsync_cmd, str(work / f"rsync-{index}")])
        return time.perf_counter() - began

    rsync(0)  # warm the host's page cache
    rsync_s, dstack_s = [], []
    for index in range(1, 4):
        dstack_s.append(dstack_sync(index, "rsync"))
        rsync_s.append(rsync(index))
    sftp_s = dstack_sync(0, "sftp")
    home = Home(work / "rsync-1")
    executor = SSHExecutor(pool_host, Store.open(home), known_hosts, home, transfer="rsync")
    began = time.perf_counter()
    executor.collect(tree, ["out"], StatCache())
    resync_s = time.perf_counter() - began
    total_mb = TREE_FILES * TREE_FILE_MB
    best = {
        name: statistics.median(values)
        for name, values in (("rsync", rsync_s), ("dstack", dstack_s))
    }
    print_table(
        f"Pulling a {total_mb} MB tree ({TREE_FILES} files) from the host into an empty target, "
        "wall seconds (median of 3, alternating)",
        ["tool", "seconds", "MB/s"],
        [
            ["rsync -a -e ssh", seconds(best["rsync"]), f"{total_mb / best['rsync']:.0f}"],
            [
                "dstack sync (rsync + hash + store)",
                seconds(best["dstack"]),
                f"{total_mb / best['dstack']:.0f}",
            ],
            ["dstack sync (SFTP, no rsync on host)", seconds(sftp_s), f"{total_mb / sftp_s:.0f}"],
            ["dstack re-sync, unchanged tree", seconds(resync_s), "-"],
        ],
    )
    verdict = "met" if best["dstack"] <= best["rsync"] * 1.05 else "missed"
    print(
        f"dstack sync {best['dstack']:.2f} s vs rsync {best['rsync']:.2f} s: "
        f"target (as fast, within 5% noise): {verdict}"
    )
    run_checked([*ssh, "rm -rf tree"])


if __name__ == "__main__":
    main()
