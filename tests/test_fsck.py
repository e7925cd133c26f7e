"""`dstack fsck` on real parts: a local store, a SeaweedFS bucket and a pool host over real SSH.
Each kind of damage is made as it happens (a blob rewritten on disk, an object overwritten in
the bucket, a record edited by hand, a killed writer's temporary file, a killed environment
build) and must be found, named, and repaired only where repairing is safe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from buckets import SeaweedS3
from conftest import Project, wait_for
from sshd import SSHServer
from test_buckets import use_s3
from test_object_stores import open_store
from test_ssh_run import pool_add

from dstack.storage.blobs import CHUNK_SIZE, blob_key, chunk_tree

PRODUCE = """
workflows:
  - name: produce
    commands: [mkdir -p out, echo alpha > out/a.txt, echo beta > out/b.txt]
    artifacts: [out]
"""
AN_HOUR_AGO = time.time() - 3600


def fsck(project: Project, *args: str) -> tuple[int, dict[str, Any]]:
    """`dstack fsck --json ARGS`: its exit status and its report."""
    done = project.dstack("fsck", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def found(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["kind"], f["path"]) for f in report["findings"]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite(path: Path, data: bytes) -> None:
    """Replace a file with other bytes (a new inode: a local store hard-links a job's files)."""
    path.unlink()
    path.write_bytes(data)


def stale(path: Path, data: bytes = b"half of something") -> Path:
    """A temporary file as a killed writer leaves it: unchanged for an hour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    return path


# --- a local store ---------------------------------------------------------------------------


def test_a_clean_store_passes_and_says_what_it_checked(project: Project) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", check=True)
    done = project.dstack("fsck", check=True)
    assert done.stdout == ""
    assert done.stderr == "checked 3 blobs, 2 manifests, 1 record, 0 hosts: nothing wrong\n"
    assert fsck(project) == (
        0,
        {
            "ok": True,
            "checked": {"blobs": 3, "hosts": 0, "manifests": 2, "records": 1},
            "findings": [],
        },
    )


def test_each_kind_of_damage_is_found_and_named(project: Project) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", check=True)
    run = project.last_run()["name"]
    project.dstack("tags", "add", "best", "-r", run, check=True)
    store = project.home / "store"
    corrupt = blob_key(sha(b"alpha\n"))
    rewrite(store / corrupt, b"alpha, changed in place\n")
    beta = sha(b"beta\n")
    lost = blob_key(beta)
    (store / lost).unlink()
    record = store / "runs" / f"{run}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "exploded"}))
    (event,) = (store / "tags" / "best").iterdir()
    event.write_text("{not json")
    project.write("data/x.txt", "uploaded\n")
    project.dstack("tags", "add", "v1", "-a", "data", check=True)
    upload = project.last_run()["name"]
    (store / "manifests" / upload / "upload.json").unlink()  # its record and tag name it
    (tagged,) = (store / "tags" / "v1").iterdir()
    left = stale(store / "blobs" / "ab" / ".tmp-1f2e3d4c")
    (store / "blobs" / "cd").mkdir()
    (store / "blobs" / "cd" / ".tmp-being-written").write_bytes(b"a live writer's")

    code, report = fsck(project)
    assert code == 1 and not report["ok"]
    assert found(report) == {
        ("corrupt", corrupt),
        ("missing", f"manifests/{run}/produce.json"),
        ("invalid", f"runs/{run}.json"),
        ("invalid", f"tags/best/{event.name}"),
        ("missing", f"runs/{upload}.json"),
        ("missing", f"tags/v1/{tagged.name}"),
        ("leftover", str(left.relative_to(project.home))),
    }, "neither the live writer's temporary file nor the blob no manifest names any more"
    why = {f["path"]: f["reason"] for f in report["findings"]}
    assert why[f"manifests/{run}/produce.json"] == f"'out/b.txt' lacks its blob {beta[:12]}…"
    assert why[f"runs/{run}.json"] == "the run record has an unknown status 'exploded'"
    assert why[f"tags/best/{event.name}"] == "the tag event is not valid JSON"
    assert why[f"tags/v1/{tagged.name}"] == (
        f"job upload lacks its manifest 'manifests/{upload}/upload.json'"
    )
    rotten = sha(b"alpha, changed in place\n")
    assert why[corrupt] == f"content hashes to {rotten[:12]}…; a manifest names it"
    assert all(f["place"] == store.as_uri() for f in report["findings"] if f["kind"] != "leftover")

    shown = project.dstack("fsck")
    assert shown.returncode == 1
    lines = shown.stdout.splitlines()
    assert lines[0] == "DSTACK_HOME:" and f"{store.as_uri()}:" in lines
    rows = [line for line in lines if line and not line.endswith(":")]  # not the places
    assert len(rows) == 2 + 7 and all(len(row) <= 80 for row in rows), shown.stdout
    assert any(line.startswith("corrupt  blobs/") for line in lines), shown.stdout
    assert shown.stderr.splitlines()[0].endswith(": 1 corrupt, 3 missing, 2 invalid, 1 leftover")


def test_repair_quarantines_a_bad_blob_and_storing_it_again_heals_the_store(
    project: Project,
) -> None:
    project.write("data/x.txt", "precious\n")
    project.dstack("tags", "add", "v1", "-a", "data", check=True)
    store = project.home / "store"
    key = blob_key(sha(b"precious\n"))
    rewrite(store / key, b"bit rot\n")
    left = stale(project.home / "cache" / ".tmp-shared-runs.json.x1y2")

    code, report = fsck(project, "--repair")
    assert code == 1, "what was corrupt is reported, repaired or not"
    actions = {(f["kind"], f["path"]): f["action"] for f in report["findings"]}
    assert actions[("leftover", "cache/.tmp-shared-runs.json.x1y2")] == "removed"
    (aside,) = (store / "quarantine").iterdir()
    assert actions[("corrupt", key)] == f"quarantined to {aside}"
    assert aside.read_bytes() == b"bit rot\n" and not (store / key).exists() and not left.exists()

    code, report = fsck(project)
    assert (code, found(report)) == (1, {("missing", report["findings"][0]["path"])})
    assert report["findings"][0]["reason"].startswith("'data/x.txt' lacks its blob")
    project.dstack("tags", "add", "v2", "-a", "data", check=True)  # stores the file again
    assert fsck(project)[0] == 0


def test_leftovers_alone_pass_and_repair_removes_only_stale_ones(project: Project) -> None:
    old = stale(project.home / "store" / ".dstack-x1y2z3")
    fresh = project.home / "store" / ".dstack-in-use"
    fresh.write_bytes(b"a live writer's")
    done = project.dstack("fsck")
    assert done.returncode == 0 and "leftover  store/.dstack-x1y2z3" in done.stdout
    assert done.stderr.splitlines() == [
        "checked 0 blobs, 0 manifests, 0 records, 0 hosts: 1 leftover",
        "Hint: dstack fsck --repair removes leftovers and bad blobs.",
    ]
    assert len(fsck(project, "--stale-after", "0")[1]["findings"]) == 2
    assert project.dstack("fsck", "--repair").stderr.endswith(": 1 leftover (1 repaired)\n")
    assert not old.exists() and fresh.exists()


def test_checking_nothing_is_refused(project: Project) -> None:
    done = project.dstack("fsck", "--no-store", "--no-hosts")
    assert done.returncode == 2 and done.stderr.startswith("Error: Nothing to check")


# --- a bucket --------------------------------------------------------------------------------


def test_a_corrupt_object_in_a_bucket_is_found_and_never_deleted(
    project: Project, s3_server: SeaweedS3
) -> None:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    use_s3(project, s3_server, bucket)
    project.write("data/x.txt", "shared\n")
    project.dstack("tags", "add", "v1", "-a", "data", check=True)
    assert fsck(project)[0] == 0
    key = blob_key(sha(b"shared\n"))
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=f"team/{key}", Body=b"overwritten by someone\n")

    for args in ((), ("--repair",)):
        code, report = fsck(project, *args)
        assert (code, found(report)) == (1, {("corrupt", key)})
        assert report["findings"][0]["place"] == f"s3://{bucket}/team"
    assert report["findings"][0]["action"].startswith("kept: ")
    body = client.get_object(Bucket=bucket, Key=f"team/{key}")["Body"].read()
    assert body == b"overwritten by someone\n", "an object others may read is never deleted"


def test_a_chunked_file_needs_each_of_its_chunks(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstack.service.fsck_store import check_store
    from dstack.storage.manifest import Entry, Manifest
    from dstack.storage.store import Store, artifact_key

    store = Store(open_store("s3", request, tmp_path, monkeypatch))
    store.blobs.chunk_size = 1024  # three chunks without moving 64 MiB
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3000))
    stored = store.blobs.put_chunked(str(big), (3000, big.stat().st_mtime_ns))
    assert stored is not None
    tree, chunks = stored
    entry = Entry("big.bin", 3000, 0o644, tree, chunks=chunks)
    store.put_manifest(artifact_key("r1", "train"), Manifest([entry]))
    report = check_store(store, repair=False)
    assert report.ok and report.checked == {"blobs": 3, "manifests": 1, "records": 0}
    store.objects.delete(blob_key(chunks[1]))
    report = check_store(store, repair=False)
    assert [(f.kind, f.path, f.reason) for f in report.findings] == [
        ("missing", "manifests/r1/train.json", "'big.bin' lacks 1 of its 3 chunks")
    ]


# --- a pool host -----------------------------------------------------------------------------


def test_a_pool_hosts_cache_is_checked_and_repaired(
    project: Project, sshd_hosts: list[SSHServer]
) -> None:
    host = sshd_hosts[0]
    pool_add(project, "h1", host)
    good = b"a good blob\n"
    chunked = b"\0" * (CHUNK_SIZE + 1)  # over one chunk: named by its chunk tree, not sha256
    tree = chunk_tree([sha(chunked[:CHUNK_SIZE]), sha(chunked[CHUNK_SIZE:])])
    left = f".tmp-{sha(good)}.4242-abcdef"
    hostile = "$(touch pwned)\nx"
    cache = host.home / ".dstack"
    host.ssh("cd && rm -rf .dstack-aside && if [ -e .dstack ]; then mv .dstack .dstack-aside; fi")
    try:
        host.ssh(
            "set -e; cd && mkdir -p .dstack/blobs .dstack/venvs && cd .dstack; "
            f"printf 'a good blob\\n' > blobs/{sha(good)}; printf 'bit rot\\n' > blobs/{sha(b'x')}; "
            f"head -c {len(chunked)} /dev/zero > blobs/{tree}; "
            f"echo half > blobs/{left}; touch -d '1 hour ago' blobs/{left}; "
            "echo half > blobs/.tmp-being-written; touch blobs/'$(touch pwned)'$'\\n'x; "
            "mkdir venvs/half venvs/ready venvs/building; touch venvs/ready/.dstack-ready; "
            "touch venvs/building.lock"
        )
        checked_and_repaired(project, cache, sha(b"x"), [sha(good), tree], left, hostile)
    finally:
        host.ssh(
            "cd && rm -rf .dstack && if [ -e .dstack-aside ]; then mv .dstack-aside .dstack; fi"
        )


def checked_and_repaired(
    project: Project, cache: Path, bad: str, fine: list[str], left: str, hostile: str
) -> None:
    """fsck finds the bad blob, the stale upload, the half-built environment and the hostile
    name; --repair removes all but the last (which it never touches); the rest stays."""
    # a build under way holds its lock (as venv.sh does): its environment is never touched
    lock = cache / "venvs" / "building.lock"
    builder = subprocess.Popen(["bash", "-c", 'exec 9>>"$0" && flock 9 && exec sleep 300', lock])
    try:
        wait_for(lambda: subprocess.run(["flock", "-n", lock, "true"]).returncode == 1)
        code, report = fsck(project)
        assert code == 1
        assert report["checked"] | {"host_blobs": 3, "environments": 3} == report["checked"]
        assert found(report) == {
            ("corrupt", f"blobs/{bad}"),
            ("leftover", f"blobs/{left}"),
            ("leftover", "venvs/half/"),
            ("invalid", "$'blobs/$(touch pwned)\\nx'"),  # as bash's %q quotes it
        }, "neither the chunk-tree-named blob nor the live upload nor the build under way"
        assert {f["place"] for f in report["findings"]} == {"h1"}
        code, report = fsck(project, "--repair")
        assert {f["action"] for f in report["findings"] if f["kind"] != "invalid"} == {"removed"}
    finally:
        builder.kill()
        builder.wait()
    blobs = sorted(p.name for p in (cache / "blobs").iterdir())
    assert blobs == sorted([*fine, ".tmp-being-written", hostile])
    assert sorted(p.name for p in (cache / "venvs").iterdir() if p.is_dir()) == [
        "building",
        "ready",
    ]
    assert not list(cache.parent.rglob("pwned")), "a name read from the host never runs"
    (cache / "blobs" / hostile).unlink()
    code, report = fsck(project)  # the builder is gone now: its environment is a leftover
    assert (code, found(report)) == (0, {("leftover", "venvs/building/")})


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # cut short: no last line
        b"corrupt\tblobs/x\tbad\t-\n",
        b"corrupt\tblobs/\x1b[2Jx\tbad\t-\nchecked\t1\t0\n",  # a terminal escape
        b"gone\tblobs/x\tbad\t-\nchecked\t1\t0\n",
        b"leftover\tblobs/x\tbad\tremoved everything\nchecked\t1\t0\n",
    ],
)
def test_a_host_answer_that_is_not_the_scripts_leaves_the_host_unchecked(answer: bytes) -> None:
    from dstack.service.fsck_hosts import parse_answer

    report = parse_answer("h1", answer)
    assert not report.ok
    assert [(f.kind, f.place, f.path) for f in report.findings] == [
        ("unchecked", "h1", "~/.dstack")
    ]
    assert "\x1b" not in report.findings[0].reason


def test_a_host_that_cannot_be_reached_is_unchecked_and_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sshd import free_port

    from dstack.backends.base import KeptHost
    from dstack.service import fsck_hosts
    from dstack.ssh.connect import HostAddress

    monkeypatch.setattr(fsck_hosts, "RETRY_FOR", 0.0)  # one try: nothing listens there
    address = HostAddress("gone", "127.0.0.1", free_port(), "nobody")
    host = KeptHost("gone", address, tmp_path / "kh", "/home/x/.dstack")
    report = fsck_hosts.check_host(host, 600, False)
    assert not report.ok and report.summary().endswith(": 1 unchecked")
    (finding,) = report.findings
    assert (finding.kind, finding.place, finding.path) == ("unchecked", "gone", "~/.dstack")
