"""A job's files placed on a pool host from its shared blob cache: what checking every cached
blob's digest before use costs, next to copying the same tree on the host with `cp -r`.

Starts its own OpenSSH server on 127.0.0.1 with a throw-away user (needs root and Debian's
openssh-server, like the tests). The tree: 2,000 files of 4 KB (a code tree) and one 256 MB
file (a checkpoint from an upstream job).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import print_table, run_checked, seconds  # noqa: E402
from sshd import make_server  # noqa: E402

SMALL_FILES, SMALL_SIZE, BIG_MB, RUNS = 2000, 4096, 256, 5


def median_of(action: Callable[[int], object]) -> float:
    samples = []
    for index in range(RUNS):
        began = time.perf_counter()
        action(index)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    from dstack.execution.remote_tree import place_on_host
    from dstack.ssh.connect import HostAddress, connect
    from dstack.ssh.remote import Remote
    from dstack.storage.manifest import scan_files
    from dstack.storage.objects import LocalObjectStore
    from dstack.storage.store import Store

    server = make_server("hcbench", "dstackhcbench")
    work = Path(tempfile.mkdtemp(prefix="dstack-bench-hc-"))
    try:
        code = work / "tree"
        (code / "src").mkdir(parents=True)
        for i in range(SMALL_FILES):
            (code / "src" / f"f{i}.py").write_bytes(os.urandom(SMALL_SIZE))
        (code / "ckpt.bin").write_bytes(os.urandom(BIG_MB << 20))
        store = Store(LocalObjectStore(work / "store"))
        entries = scan_files(code, ["src", "ckpt.bin"], store.blobs)
        address = HostAddress("box", server.host, server.port, server.user, str(server.key))
        known_hosts = work / "known_hosts"
        connect(address, known_hosts, pin=True).close()
        remote = Remote(address, known_hosts)
        root = f"{server.home}/.dstack"
        cache = f"{root}/blobs"
        began = time.perf_counter()
        place_on_host(remote, store.blobs, cache, f"{root}/b/cold", entries)
        cold = time.perf_counter() - began
        wanted = "\n".join(sorted({e.sha256 for e in entries})).encode()
        check = median_of(
            lambda i: remote.check_script("tree-missing-blobs.sh", cache, data=wanted)
        )
        warm = median_of(
            lambda i: place_on_host(remote, store.blobs, cache, f"{root}/b/warm{i}", entries)
        )
        ssh = server.ssh_argv()
        copy = median_of(lambda i: run_checked([*ssh, f"cp -r {root}/b/cold {root}/b/cp{i}"]))
        remote.close()
        total_mb = (SMALL_FILES * SMALL_SIZE >> 20) + BIG_MB
        print_table(
            f"Placing {SMALL_FILES + 1} files ({total_mb} MB) on a host (loopback sshd), "
            f"wall seconds (median of {RUNS})",
            ["what", "seconds"],
            [
                ["dstack, cold cache (uploads every blob)", seconds(cold)],
                ["dstack, warm cache (digests checked, tree built)", seconds(warm)],
                ["  of which: checking the cached blobs' digests", seconds(check)],
                ["ssh host cp -r (the same tree, already built)", seconds(copy)],
            ],
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
