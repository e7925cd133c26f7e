"""Artifacts and tags: listing, downloading, live saving, integrity, partial sets, tag rules."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import LIVE_MOUNT, Project, wait_for

PRODUCE = """
workflows:
  - name: produce
    commands:
      - mkdir -p out/sub && echo one > out/a.txt && echo two > out/sub/b.txt
      - head -c 3000000 /dev/urandom > out/big.bin
      - ln -s a.txt out/link
    artifacts: [out]
"""


def listed(project: Project, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(project.dstack("artifacts", "list", ref, "--json", check=True).stdout)


def test_list_and_download_are_byte_identical(project: Project, tmp_path: Path) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", check=True)
    run = project.last_run()["name"]
    files = {f["path"]: f for f in listed(project, run)["produce"]["files"]}
    assert set(files) == {"out/a.txt", "out/sub/b.txt", "out/big.bin", "out/link"}
    assert files["out/big.bin"]["size"] == 3000000 and files["out/link"]["link"] == "a.txt"
    table = project.dstack("artifacts", "list", run, check=True).stdout
    assert "out/sub/b.txt" in table and "2.86MB" in table
    target = tmp_path / "dl"
    project.dstack("artifacts", "download", run, "-o", str(target), check=True)
    job_out = project.home / "runs" / run / "produce" / "work" / "out"
    for rel in ("a.txt", "sub/b.txt", "big.bin"):
        assert (target / "out" / rel).read_bytes() == (job_out / rel).read_bytes()
    assert (target / "out" / "link").is_symlink() and (
        target / "out" / "link"
    ).read_text() == "one\n"


def test_corrupted_blob_is_detected_and_named(project: Project, tmp_path: Path) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", check=True)
    run = project.last_run()["name"]
    sha = next(
        f["sha256"] for f in listed(project, run)["produce"]["files"] if f["path"] == "out/a.txt"
    )
    blob = project.home / "store" / "blobs" / sha[:2] / sha[2:]
    blob.chmod(0o644)
    blob.write_text("tampered\n")
    done = project.dstack("artifacts", "download", run, "-o", str(tmp_path / "dl"))
    assert done.returncode == 1 and "'out/a.txt' is corrupted in the store" in done.stderr
    assert not (tmp_path / "dl" / "out" / "a.txt").exists(), "no damaged file is left behind"


def test_mount_artifact_is_listed_while_the_job_still_runs(project: Project) -> None:
    """`mount: true` files are saved while the job runs (how soon is bench/'s business)."""
    project.workflows(LIVE_MOUNT)
    project.dstack("run", "live", "-d", check=True)
    run = project.last_run()["name"]

    def present() -> bool:
        done = project.dstack("artifacts", "list", run, "--json")
        if done.returncode != 0:
            return False
        paths = [f["path"] for f in json.loads(done.stdout).get("live", {}).get("files", [])]
        return "ckpt/written-at" in paths

    wait_for(present, timeout=25, interval=0.1)  # the job goes on for 30 s after writing it
    assert listed(project, run)["live"]["state"] == "live"
    assert project.last_run()["status"] == "running"
    project.dstack("stop", run, "-x", check=True)
    stopped = listed(project, run)["live"]
    assert stopped["state"] == "partial" and stopped["files"][0]["path"] == "ckpt/written-at"


def test_failed_job_keeps_what_it_saved_marked_partial(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: crash\n    commands: [echo half > out/half.txt, exit 1]\n"
        "    artifacts: [out]\n"
    )
    assert project.dstack("run", "crash").returncode == 1
    saved = listed(project, project.last_run()["name"])["crash"]
    assert saved["state"] == "partial" and [f["path"] for f in saved["files"]] == ["out/half.txt"]
    table = project.dstack("artifacts", "list", project.last_run()["name"], check=True).stdout
    assert "crash (partial)" in table


def test_tags_add_list_delete_and_run_with_tag(project: Project, tmp_path: Path) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", "-t", "first", check=True)
    run = project.last_run()["name"]
    tags = json.loads(project.dstack("tags", "list", "--json", check=True).stdout)
    assert [(t["name"], t["run"]) for t in tags] == [("first", run)]
    project.dstack("tags", "add", "second", "-r", run, check=True)
    assert "out/a.txt" in json.dumps(listed(project, ":second"))
    again = project.dstack("tags", "add", "second", "-r", run)
    assert again.returncode == 1 and "Tag 'second' already exists" in again.stderr
    project.dstack("tags", "delete", "second", check=True)
    assert [t["name"] for t in json.loads(project.dstack("tags", "list", "--json").stdout)] == [
        "first"
    ]
    missing = project.dstack("artifacts", "list", ":second")
    assert missing.returncode == 1 and "No tag named 'second'" in missing.stderr


def test_only_finished_runs_can_be_tagged(project: Project) -> None:
    project.workflows("workflows:\n  - {name: slow, commands: [sleep 30]}\n")
    project.dstack("run", "slow", "-d", check=True)
    run = project.last_run()["name"]
    done = project.dstack("tags", "add", "early", "-r", run)
    assert done.returncode == 1 and "only finished runs can be tagged" in done.stderr
    project.dstack("stop", run, "-x", check=True)


def test_tag_local_files_and_use_them_as_deps(project: Project) -> None:
    project.write("dataset/train.csv", "x,y\n1,2\n")
    project.workflows(
        "workflows:\n  - name: use\n    deps: [{tag: raw}]\n    commands: [cat dataset/train.csv]\n"
    )
    project.dstack("tags", "add", "raw", "-a", "dataset", check=True)
    (project.root / "dataset" / "train.csv").unlink()  # the job must get it from the store
    assert project.dstack("run", "use", check=True).stdout == "x,y\n1,2\n"
    outside = project.dstack("tags", "add", "bad", "-a", "/etc/hostname")
    assert outside.returncode == 2 and "is outside" in outside.stderr


def test_rm_refuses_tagged_run_and_force_keeps_tagged_artifacts(
    project: Project, tmp_path: Path
) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", "-t", "keep", check=True)
    run = project.last_run()["name"]
    refused = project.dstack("rm", run)
    assert refused.returncode == 1 and "tagged as 'keep'" in refused.stderr
    assert project.ps()[0]["name"] == run
    project.dstack("rm", run, "--force", check=True)
    assert project.ps() == []
    project.dstack("artifacts", "download", ":keep", "-o", str(tmp_path / "k"), check=True)
    assert (tmp_path / "k" / "out" / "a.txt").read_text() == "one\n"


def test_rm_removes_untagged_run_and_its_files(project: Project) -> None:
    project.workflows(PRODUCE)
    project.dstack("run", "produce", check=True)
    run = project.last_run()["name"]
    project.dstack("rm", run, check=True)
    assert project.ps() == [] and not (project.home / "runs" / run).exists()
    assert not (project.home / "store" / "manifests" / run / "produce.json").exists()
    gone = project.dstack("logs", run)
    assert gone.returncode == 1 and f"No run named '{run}'" in gone.stderr
