"""The host agent: a job on a pool host writes its log, status and artifacts straight to the
bucket, with upload rights for its own run only, and goes on to its end without the laptop.

Real parts: sshd in a network namespace (the host) reaching SeaweedFS on the outside end of
its veth pair (the bucket), and the dstack CLI in subprocesses (the laptop and a teammate).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import AgentLab, Project, wait_for
from sshd import SSHServer
from test_buckets import new_bucket, use_s3

from dstack.agent.keys import log_prefix, status_key

TRAIN = """
workflows:
  - name: train
    commands:
      - mkdir -p out ckpt
      - echo "epoch 1"
      - echo weights > ckpt/w1.bin
      - until [ -e {gate} ]; do sleep 0.05; done
      - echo "epoch 2"
      - head -c 3000000 /dev/urandom > out/model.bin
      - sha256sum out/model.bin | cut -d' ' -f1 > out/model.sha
    artifacts: [out, {{path: ckpt, mount: true}}]
"""


class Bucket:
    """What a test reads of the bucket directly (with the admin key, as a teammate could)."""

    def __init__(self, lab: AgentLab, name: str) -> None:
        self.client, self.name, self.root = lab.s3.client(), name, "team/"

    def get(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.name, Key=self.root + key)["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(body.read())

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.root + prefix
        )
        return [o["Key"][len(self.root) :] for p in pages for o in p.get("Contents", [])]

    def status(self, run: str, job: str) -> dict[str, object]:
        raw = self.get(status_key(run, job))
        return json.loads(raw) if raw else {}

    def log(self, run: str, job: str) -> bytes:
        return b"".join(self.get(k) or b"" for k in sorted(self.keys(log_prefix(run, job))))


@pytest.fixture
def lab_project(project: Project, agent_lab: AgentLab, tmp_path: Path) -> tuple[Project, Bucket]:
    bucket = new_bucket()
    use_s3(project, agent_lab.s3, bucket)
    project.dstack(*agent_lab.host.pool_add_args("box"), check=True)
    return project, Bucket(agent_lab, bucket)


def gate_file(lab: AgentLab, tmp_path: Path) -> Path:
    """A file the test creates to let the job go on (in a folder the host user can reach)."""
    folder = lab.host.home / "gates"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    return folder / f"go-{tmp_path.name}"


def start_on_box(project: Project) -> tuple[subprocess.Popen[str], str]:
    """`dstack run train --host box`, attached; the run's name once its job runs."""
    proc = project.popen("run", "train", "--host", "box")
    wait_for(lambda: project.ps() and project.ps()[0]["status"] == "running", 60, what="start")
    return proc, str(project.ps()[0]["name"])


def test_the_host_saves_the_log_and_artifacts_to_the_bucket_itself(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(TRAIN.format(gate=gate))
    proc, run = start_on_box(project)
    # while it runs: the log and the live checkpoint reach the bucket from the host
    wait_for(lambda: b"epoch 1" in bucket.log(run, "train"), 30, what="the log in the bucket")
    wait_for(
        lambda: b"ckpt/w1.bin" in (bucket.get(f"manifests/{run}/train.json") or b""),
        30,
        what="the live checkpoint in the bucket",
    )
    assert bucket.status(run, "train")["state"] == "running"
    gate.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "epoch 2" in out
    assert f"box saves train's log and artifacts to s3://{bucket.name}/team itself" in err
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "complete"
    assert {e["path"] for e in sealed["entries"]} == {
        "out/model.bin",
        "out/model.sha",
        "ckpt/w1.bin",
    }
    status = bucket.status(run, "train")
    assert (status["state"], status["exit_code"], status["host"]) == ("sealed", 0, "box")
    assert saver(project, run) == "agent"
    assert b"epoch 2" in bucket.log(run, "train")
    # what the host sent is what a teammate gets, checked by its hash
    dest = tmp_path / "got"
    project.dstack("artifacts", "download", run, "-o", str(dest), check=True)
    model = (dest / "out" / "model.bin").read_bytes()
    assert hashlib.sha256(model).hexdigest() == (dest / "out/model.sha").read_text().strip()


def test_the_job_ends_and_is_sealed_with_every_laptop_process_killed(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(TRAIN.format(gate=gate))
    project.dstack("run", "train", "--host", "box", "-d", check=True)
    run = project.ps()[0]["name"]
    wait_for(lambda: b"epoch 1" in bucket.log(run, "train"), 60, what="the log in the bucket")
    wait_for(lambda: project.ps()[0]["status"] == "running", 60, what="the job recorded running")
    supervisor = project.ps()[0]
    os.kill(supervisor_pid(project, run), signal.SIGKILL)  # the laptop is gone
    gate.touch()
    wait_for(lambda: bucket.status(run, "train").get("state") == "sealed", 60, what="the seal")
    assert supervisor["status"] == "running"
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "complete"
    assert b"epoch 2" in bucket.log(run, "train")
    # the laptop comes back: its next command finds the job done, with the sealed manifest
    wait_for(lambda: project.ps()[0]["status"] == "done", 60, what="the run recorded as done")
    assert "epoch 2" in project.dstack("logs", run, check=True).stdout
    listed = json.loads(project.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert "out/model.bin" in json.dumps(listed)


def saver(project: Project, run: str) -> str:
    """Who saved the job's data, as the home recorded it: its host's agent, or dstack here."""
    with sqlite3.connect(project.home / "state.db") as db:
        (record,) = db.execute("SELECT record FROM jobs WHERE run_name = ?", (run,)).fetchone()
    return str(json.loads(record)["saver"])


def supervisor_pid(project: Project, run: str) -> int:
    with sqlite3.connect(project.home / "state.db") as db:
        row = db.execute("SELECT supervisor_pid FROM runs WHERE name = ?", (run,)).fetchone()
    return int(row[0])


def test_a_host_that_cannot_reach_the_bucket_goes_through_the_laptop(
    project: Project, agent_lab: AgentLab, sshd_hosts: list[SSHServer], tmp_path: Path
) -> None:
    """h1 lives in another network namespace with no route to the lab's bucket: its job's
    files go through this machine, the run says why, and nothing is lost."""
    bucket = Bucket(agent_lab, new_bucket())
    use_s3(project, agent_lab.s3, bucket.name)
    project.dstack(*sshd_hosts[0].pool_add_args("far"), check=True)
    project.workflows("""
        workflows:
          - name: train
            commands: ['mkdir -p out', 'echo far > out/result.txt', 'echo done']
            artifacts: [out]
    """)
    done = project.dstack("run", "train", "--host", "far")
    assert done.returncode == 0, done.stderr
    note = "train's log and artifacts go through this machine: far ("
    assert note in done.stderr and "cannot write to s3://" in done.stderr
    run = project.last_run()["name"]
    assert bucket.status(run, "train") == {}  # no agent wrote anything
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert (sealed["state"], [e["path"] for e in sealed["entries"]]) == (
        "complete",
        ["out/result.txt"],
    )
    assert saver(project, run) == "dstack"


def test_direct_false_keeps_every_byte_on_the_laptop_path(
    lab_project: tuple[Project, Bucket], tmp_path: Path
) -> None:
    project, bucket = lab_project
    config = project.home / "config.yaml"
    assert "direct: true" in config.read_text()  # `dstack init` writes the default out
    config.write_text(config.read_text().replace("direct: true", "direct: false"))
    project.workflows("""
        workflows:
          - name: train
            commands: ['mkdir -p out', 'echo near > out/result.txt']
            artifacts: [out]
    """)
    done = project.dstack("run", "train", "--host", "box")
    assert done.returncode == 0, done.stderr
    assert "saves" not in done.stderr and "through this machine" not in done.stderr
    run = project.last_run()["name"]
    assert bucket.status(run, "train") == {}
    assert b"out/result.txt" in (bucket.get(f"manifests/{run}/train.json") or b"")


def test_the_agent_bundle_is_stdlib_only_python_3_9_code(tmp_path: Path) -> None:
    """Hosts need only python3 >= 3.9: the bundle imports in a bare interpreter that has no
    dstack installed, and uses no syntax or call newer than 3.9."""
    import ast
    import io
    import subprocess
    import zipfile

    from dstack.execution.agent_bundle import bundle

    data, sha = bundle()
    assert hashlib.sha256(data).hexdigest() == sha and bundle()[1] == sha  # stable
    archive = zipfile.ZipFile(io.BytesIO(data))
    modules = [
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in archive.namelist()
        if n != "__main__.py"
    ]
    zipped = tmp_path / "agent.pyz"
    zipped.write_bytes(data)
    probe = f"import sys; sys.path.insert(0, {str(zipped)!r}); " + "; ".join(
        f"import {m}" for m in modules if not m.endswith("__main__")
    )
    bare = subprocess.run(["/usr/bin/python3", "-I", "-c", probe], capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    for name in archive.namelist():
        tree = ast.parse(archive.read(name).decode(), name, feature_version=(3, 9))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                assert not any(k.arg == "strict" for k in node.keywords), (name, node.lineno)
                if getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                    assert not isinstance(node.args[1], ast.BinOp), (name, node.lineno)
            assert not isinstance(node, ast.Match), name


def test_agent_stage_says_when_a_host_has_no_usable_python(tmp_path: Path) -> None:
    """A host whose python3 is older than 3.9 (or missing) gets no agent: the stage script
    says why, and the laptop path is used."""
    import subprocess

    from dstack.scripts import command

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'Python 3.6.9' && exit 0\nexit 1\n"
    )
    (fake / "python3").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    line = command("agent-stage.sh", str(tmp_path / "a.pyz"), "0" * 64)
    out = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "python: Python 3.6.9"


def test_a_sealed_job_whose_host_is_gone_is_recorded_from_the_bucket(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    """The laptop slept through the job's end and its host is gone by the time it wakes (a
    VM that powered itself off, a server taken out of the pool): the run is recorded from what
    the agent sealed, its log and artifacts included, instead of waiting on a host that does
    not answer or failing for a lost one."""
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(TRAIN.format(gate=gate).replace("out/model.sha", "out/model.sha; exit 3"))
    project.dstack("run", "train", "--host", "box", "-d", check=True)
    run = project.ps()[0]["name"]
    wait_for(lambda: b"epoch 1" in bucket.log(run, "train"), 60, what="the log in the bucket")
    wait_for(lambda: project.ps()[0]["status"] == "running", 60, what="the job recorded running")
    os.kill(supervisor_pid(project, run), signal.SIGKILL)
    gate.touch()
    wait_for(lambda: bucket.status(run, "train").get("state") == "sealed", 60, what="the seal")
    seen: list[dict[str, object]] = []

    def recorded() -> bool:  # each `ps` recovers the run; its host does not answer meanwhile
        seen[:] = project.ps()
        return seen[0]["status"] != "running"

    agent_lab.host.restart_dropping_connections(down_until=recorded)
    assert (seen[0]["name"], seen[0]["status"], seen[0]["exit_code"]) == (run, "failed", 3)
    logs = project.dstack("logs", run, check=True).stdout
    assert logs.splitlines() == ["epoch 1", "epoch 2"]
    listed = project.dstack("artifacts", "list", run, "--json", check=True).stdout
    assert "out/model.bin" in listed and "ckpt/w1.bin" in listed
