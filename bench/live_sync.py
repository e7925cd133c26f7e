"""How soon a file written by a running job is in the store with `mount: true`.

A detached job writes a checkpoint file every 2 s, each holding the time it was written; the
bench polls the store's live manifest (and, in a bucket, the blob) and records when each
checkpoint became readable there. Done for the local store and for S3 (SeaweedFS, from the
[dev] extra). Target: every checkpoint in the store within 2 s of being written.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import DSTACK, env_with, run_checked  # noqa: E402
from buckets import start_seaweedfs  # noqa: E402

from dstack.errors import StoreError  # noqa: E402

CHECKPOINTS = 6
WORKFLOW = f"""
workflows:
  - name: live
    commands:
      - for i in $(seq {CHECKPOINTS}); do date +%s.%N > ckpt/step-$i; sleep 2; done
    artifacts: [{{path: ckpt, mount: true}}]
"""


def latencies(
    read_manifest: Callable[[], dict[str, str]], has_blob: Callable[[str], bool], work: Path
) -> list[float]:
    """Seconds from each checkpoint's write to its being readable in the store."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + CHECKPOINTS * 2 + 30
    while len(seen) < CHECKPOINTS and time.monotonic() < deadline:
        for path, sha in read_manifest().items():
            if path not in seen and has_blob(sha):
                seen[path] = time.time()
        time.sleep(0.02)
    return [seen[p] - float((work / p).read_text()) for p in sorted(seen)]


def measure(label: str, env: dict[str, str], objects: object, home: Path, repo: Path) -> None:
    run_checked([DSTACK, "run", "live", "-d"], repo, env)
    run = json.loads(run_checked([DSTACK, "ps", "--json"], repo, env))[0]["name"]
    work = home / "runs" / run / "live" / "work"
    key = f"manifests/{run}/live.json"

    def read_manifest() -> dict[str, str]:
        try:
            data = json.loads(objects.get_bytes(key))  # type: ignore[attr-defined]
        except StoreError:  # not written yet
            return {}
        return {e["path"]: e["sha256"] for e in data["entries"]}

    def has_blob(sha: str) -> bool:
        return bool(objects.exists(f"blobs/{sha[:2]}/{sha[2:]}"))  # type: ignore[attr-defined]

    found = latencies(read_manifest, has_blob, work)
    run_checked([DSTACK, "stop", run, "-x"], repo, env)
    if not found:
        print(f"{label:<12} no checkpoint reached the store")
        return
    print(
        f"{label:<12} {len(found)}/{CHECKPOINTS} checkpoints; median "
        f"{statistics.median(found):.2f} s, worst {max(found):.2f} s (target: 2 s)"
    )


def main() -> None:
    from dstack.storage.objects import LocalObjectStore
    from dstack.storage.s3 import S3ObjectStore

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        (repo / ".dstack").mkdir(parents=True)
        (repo / ".dstack" / "workflows.yaml").write_text(WORKFLOW)
        home = root / "home-local"
        env = env_with(DSTACK_HOME=str(home))
        measure("local store", env, LocalObjectStore(home / "store"), home, repo)

        server = start_seaweedfs(root / "seaweedfs")
        try:
            home = root / "home-s3"
            env = env_with(DSTACK_HOME=str(home), **server.env())
            run_checked(
                [DSTACK, "init", "--store", "s3://bench/live", "--endpoint-url", server.endpoint],
                repo,
                env,
            )
            os.environ.update(server.env())  # for this process's S3 client
            objects = S3ObjectStore("bench", "live", server.endpoint)
            measure("S3", env, objects, home, repo)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
