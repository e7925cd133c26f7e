"""Faults lose nothing on the host agent's path, and any home can stop a job through the store.

Real parts (as tests/test_agent.py): sshd in a network namespace (the host) that reaches
SeaweedFS on the outside end of its veth pair (the bucket), the dstack CLI in subprocesses.
The store is cut off from the host alone with a routing rule in the host's namespace that
refuses TCP to the store's port (`ip rule ... prohibit`: no iptables or nft on this machine;
like iptables' REJECT it fails at once, and SSH and this machine's own path to the store
stay up).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import AgentLab, Project, wait_for
from test_agent import Bucket, gate_file, lab_project, start_on_box, supervisor_pid
from test_buckets import new_bucket, use_s3

from dstack.agent import http as agent_http
from dstack.agent.keys import status_key, stop_key
from dstack.agent.stop import StopRequest
from dstack.errors import StoreError

__all__ = ["lab_project"]  # the fixture, shared with test_agent.py

CUT_PREF = 50  # the routing rule's priority: before the namespace's own tables


@contextmanager
def store_cut_off(lab: AgentLab) -> Iterator[None]:
    """While inside: the host cannot open a TCP connection to the store; SSH still works."""
    assert lab.host.netns
    rule = ["ip", "rule", "add", "pref", str(CUT_PREF), "ipproto", "tcp"]
    rule += ["dport", str(lab.s3.port), "prohibit"]
    subprocess.run(["ip", "netns", "exec", lab.host.netns, *rule], check=True)
    try:
        yield
    finally:
        rule[2] = "del"
        subprocess.run(["ip", "netns", "exec", lab.host.netns, *rule], check=True)


def host_job_dir(lab: AgentLab, run: str, job: str) -> Path:
    found = list((lab.host.home / ".dstack" / "runs").glob(f"*/{run}/{job}"))
    assert len(found) == 1, found
    return found[0]


def host_status(job_dir: Path) -> dict[str, object]:
    try:
        return json.loads((job_dir / "agent-status.json").read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return {}


def agent_pids(job_dir: Path) -> list[int]:
    """The agents watching the job: `python3 BUNDLE.pyz JOB_DIR` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b".pyz") for a in argv) and str(job_dir).encode() in argv:
            found.append(int(entry.name))
    return found


class Output:
    """A running command's stdout or stderr, read as it comes (an attached run's notes)."""

    def __init__(self, stream: object) -> None:
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.text += line


def laptop_log(project: Project, run: str, job: str) -> bytes:
    """The laptop's copy of the job's log, mirrored from the host over SSH (the host's own
    goes with the job's folder once the run is over)."""
    return (project.home / "runs" / run / job / "log").read_bytes()


def log_lines(raw: bytes) -> list[str]:
    """The job's lines without the wrapper's timestamps."""
    return [line.split(" ", 1)[1] for line in raw.decode().splitlines()]


CUT = """
workflows:
  - name: train
    commands:
      - mkdir -p out ckpt
      - echo "before the cut"
      - until [ -e {gate}.cut ]; do sleep 0.05; done
      - for i in $(seq 1 500); do echo "line $i while the store is away"; done
      - echo during > ckpt/during.txt
      - until [ -e {gate}.end ]; do sleep 0.05; done
      - head -c 2000000 /dev/urandom > out/model.bin
      - echo "the end"
    artifacts: [out, {{path: ckpt, mount: true}}]
"""


def test_the_agent_buffers_while_the_store_is_away_and_sends_everything_after(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(CUT.format(gate=gate))
    proc, run = start_on_box(project)
    out, notes = Output(proc.stdout), Output(proc.stderr)
    wait_for(lambda: b"before the cut" in bucket.log(run, "train"), 30, what="the first line")
    job_dir = host_job_dir(agent_lab, run, "train")
    with store_cut_off(agent_lab):
        Path(f"{gate}.cut").touch()
        wait_for(lambda: host_status(job_dir).get("state") == "buffering", 30, what="buffering")
        wait_for(lambda: "cannot write to the store now" in notes.text, 30, what="the note")
        assert notes.text.count("cannot write to the store now") == 1
        Path(f"{gate}.end").touch()  # the job ends while the store is away
        wait_for(lambda: (job_dir / "rc").exists(), 30, what="the job's end")
        wait_for(lambda: b"line 500" in (job_dir / "log").read_bytes(), 10, what="its lines")
        assert b"while the store is away" not in bucket.log(run, "train")
        assert bucket.status(run, "train")["state"] == "running"
    assert proc.wait(timeout=180) == 0, notes.text
    out.thread.join(10)
    notes.thread.join(10)
    assert "the end" in out.text
    assert notes.text.count("cannot write to the store now") == 1
    # every line the host wrote is in the bucket, once, in order: byte for byte its log
    assert bucket.log(run, "train") == laptop_log(project, run, "train")
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "complete"
    assert {e["path"] for e in sealed["entries"]} == {"out/model.bin", "ckpt/during.txt"}
    status = bucket.status(run, "train")
    assert (status["state"], status["exit_code"]) == ("sealed", 0)
    assert project.ps()[0]["status"] == "done"


KILLED = """
workflows:
  - name: train
    commands:
      - for i in $(seq 1 150); do echo "line $i"; sleep 0.02; done
      - until [ -e {gate} ]; do sleep 0.05; done
      - for i in $(seq 151 300); do echo "line $i"; sleep 0.01; done
"""


def test_a_killed_agent_is_started_again_and_resumes_without_a_gap_or_a_repeat(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(KILLED.format(gate=gate))
    project.dstack("run", "train", "--host", "box", "-d", check=True)
    run = project.ps()[0]["name"]
    wait_for(lambda: b" line 20\n" in bucket.log(run, "train"), 60, what="the first lines")
    job_dir = host_job_dir(agent_lab, run, "train")
    [first] = agent_pids(job_dir)
    agent_lab.host.ssh(f"kill -KILL {first}")  # as the host's user, while the job writes
    wait_for(lambda: first not in agent_pids(job_dir), 10, what="the agent gone")
    # the run's supervisor looks at the agent every few seconds and starts it again
    again = wait_for(lambda: agent_pids(job_dir), 30, what="the agent started again")
    assert first not in again  # type: ignore[operator]
    wait_for(
        lambda: (job_dir / "agent.log").read_text().count(" watches ") == 2,
        10,
        what="the second agent's start in its log",
    )
    gate.touch()
    wait_for(lambda: project.ps()[0]["status"] == "done", 60, what="the run recorded as done")
    assert bucket.status(run, "train")["state"] == "sealed"
    in_bucket = bucket.log(run, "train")
    assert in_bucket == laptop_log(project, run, "train")
    assert log_lines(in_bucket) == [f"line {i}" for i in range(1, 301)]


TRAIN = """
workflows:
  - name: train
    commands:
      - mkdir -p out ckpt
      - echo "epoch 1"
      - echo weights > ckpt/w1.bin
      - until [ -e {gate} ]; do sleep 0.05; done
      - echo "epoch 2"
      - echo model > out/model.bin
    artifacts: [out, {{path: ckpt, mount: true}}]
"""


def test_the_job_ends_and_is_sealed_while_ssh_is_cut(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(TRAIN.format(gate=gate))
    proc, run = start_on_box(project)
    wait_for(lambda: b"epoch 1" in bucket.log(run, "train"), 30, what="the log in the bucket")

    def sealed_with_ssh_down() -> bool:
        gate.touch()  # the job goes on to its end while no one can log in to its host
        return bucket.status(run, "train").get("state") == "sealed"

    agent_lab.host.restart_dropping_connections(sealed_with_ssh_down)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "epoch 2" in out
    assert project.ps()[0]["status"] == "done"
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "complete"
    assert {e["path"] for e in sealed["entries"]} == {"out/model.bin", "ckpt/w1.bin"}


def test_a_host_restart_fails_the_job_with_its_partial_artifacts_sealed(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)  # never opened: the host "restarts" first
    project.workflows(TRAIN.format(gate=gate))
    proc, run = start_on_box(project)
    wait_for(
        lambda: b"ckpt/w1.bin" in (bucket.get(f"manifests/{run}/train.json") or b""),
        30,
        what="the live checkpoint in the bucket",
    )
    job_dir = host_job_dir(agent_lab, run, "train")
    pgid = int((job_dir / "pid").read_text())
    [agent] = agent_pids(job_dir)
    # everything on the host dies at once, as in a power cut: no exit code is written
    agent_lab.host.ssh(f"kill -KILL -- -{pgid} {agent}")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0, out
    [job] = project.inspect(run)["jobs"]
    assert job["status"] == "failed"
    assert "vanished" in job["error"]
    assert project.ps()[0]["status"] == "failed"
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "partial"
    assert {e["path"] for e in sealed["entries"]} == {"ckpt/w1.bin"}
    status = bucket.status(run, "train")
    assert status["state"] == "sealed"
    assert "vanished" in str(status["reason"])


STOPPABLE = """
workflows:
  - name: train
    commands:
      - mkdir -p ckpt
      - echo weights > ckpt/w1.bin
      - echo "epoch 1"
      - until [ -e {gate} ]; do sleep 0.05; done
    artifacts: [{{path: ckpt, mount: true}}]
"""


def test_a_teammate_stops_a_running_job_through_the_store(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)  # never opened: only a stop ends the job
    project.workflows(STOPPABLE.format(gate=gate))
    project.dstack("run", "train", "--host", "box", "-d", check=True)
    run = project.ps()[0]["name"]
    wait_for(
        lambda: b"ckpt/w1.bin" in (bucket.get(f"manifests/{run}/train.json") or b""),
        60,
        what="the live checkpoint in the bucket",
    )
    job_dir = host_job_dir(agent_lab, run, "train")
    # a request that is not valid (anyone who may write to the bucket could put one) is ignored
    bogus = b'{"version": 1, "by": "mallory", "then": "rm -rf /"}'
    bucket.client.put_object(
        Bucket=bucket.name, Key=bucket.root + stop_key(run, "train"), Body=bogus
    )
    agent_log = job_dir / "agent.log"
    wait_for(lambda: "ignored a stop request" in agent_log.read_text(), 30, what="the refusal")
    assert host_status(job_dir).get("state") == "running"

    teammate = Project(project.root, tmp_path / "home-bob")
    try:
        use_s3(teammate, agent_lab.s3, bucket.name)
        teammate.extra_env.update(LOGNAME="bob", USER="bob")
        [seen] = [r for r in teammate.ps() if r["name"] == run]
        assert seen["status"] == "running"
        done = teammate.dstack("stop", run, check=True)
        assert f"Run {run} stopped." in done.stderr
    finally:
        teammate.cleanup()
    status = bucket.status(run, "train")
    assert status["state"] == "sealed"
    assert re.fullmatch(r"stopped by bob@\S+", str(status["reason"]))
    sealed = json.loads(bucket.get(f"manifests/{run}/train.json") or b"{}")
    assert sealed["state"] == "partial"
    assert {e["path"] for e in sealed["entries"]} == {"ckpt/w1.bin"}
    assert not agent_pids(job_dir)
    # the owner's home learns it from the host: the run stopped, and by whom
    wait_for(lambda: project.ps()[0]["status"] == "stopped", 60, what="the run stopped")
    [job] = project.inspect(run)["jobs"]
    assert job["status"] == "stopped"
    assert "stopped by bob@" in job["error"]


def test_stop_goes_through_the_store_when_the_host_cannot_be_reached(
    lab_project: tuple[Project, Bucket], agent_lab: AgentLab, tmp_path: Path
) -> None:
    project, bucket = lab_project
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(STOPPABLE.format(gate=gate))
    project.dstack("run", "train", "--host", "box", "-d", check=True)
    run = project.ps()[0]["name"]
    wait_for(lambda: b"epoch 1" in bucket.log(run, "train"), 60, what="the log in the bucket")
    os.kill(supervisor_pid(project, run), signal.SIGKILL)  # no supervisor to ask
    stopped: list[str] = []

    def stop_while_down() -> bool:
        if not stopped:
            done = project.dstack("stop", run, "-x", check=True)
            stopped.append(done.stderr)
        return True

    agent_lab.host.restart_dropping_connections(stop_while_down)
    assert "asking its agent through the store" in stopped[0]
    assert f"Run {run} stopped." in stopped[0]
    status = bucket.status(run, "train")
    assert (status["state"], status["exit_code"]) == ("sealed", 137)
    assert str(status["reason"]).startswith("stopped by ")
    # with the host back, this home records it stopped
    wait_for(lambda: project.ps()[0]["status"] == "stopped", 60, what="the run stopped")


def test_stop_requests_are_checked_before_they_are_obeyed() -> None:
    assert StopRequest.parse(StopRequest("bob@laptop", True, 1.5).to_json()) == StopRequest(
        "bob@laptop", True, 1.5
    )
    for bad in (
        b"[]",
        b"not json",
        b"\xff\xfe",
        b'{"version": 2, "by": "bob"}',
        b'{"version": 1}',
        b'{"version": 1, "by": ""}',
        b'{"version": 1, "by": "bob\\u001b[2J"}',
        b'{"version": 1, "by": "bob", "abort": "yes"}',
        b'{"version": 1, "by": "bob", "at": true}',
        b'{"version": 1, "by": "bob", "shell": "rm -rf /"}',
        b'{"version": 1, "by": "' + b"b" * 2000 + b'"}',
    ):
        with pytest.raises(ValueError):
            StopRequest.parse(bad)


class _Store(http.server.BaseHTTPRequestHandler):
    """A store that has one object, knows no other, and never answers a POST."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = b'{"version": 1, "by": "bob@laptop"}'
        self.send_response(200 if self.path == "/stop" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.server.silent.wait()  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


def test_the_agent_reads_stop_requests_and_gives_up_on_a_store_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    server.silent = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        raw = agent_http.fetch(f"{url}/stop", "the stop request", 1024)
        assert StopRequest.parse(raw or b"").by == "bob@laptop"
        assert agent_http.fetch(f"{url}/none", "the stop request", 1024) is None
        with pytest.raises(StoreError, match="larger than 10 bytes"):
            agent_http.fetch(f"{url}/stop", "the stop request", 10)
        # a frozen store: the write fails (and is retried later) instead of hanging the agent
        monkeypatch.setattr(agent_http, "SMALL_TIMEOUT", 0.5)
        with pytest.raises(StoreError, match="Cannot reach the store to write 'x'"):
            agent_http.send("POST", f"{url}/x", b"status", {}, "'x'")
    finally:
        server.silent.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def local_agent(
    lab: AgentLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: bytes
) -> tuple[Bucket, Path, list[str]]:
    """A job folder here, of a job that ended with ``log``, whose agent (run as the returned
    command) writes to a new bucket under grants for the job's keys."""
    from dstack.agent.config import AgentConfig
    from dstack.storage.s3 import S3ObjectStore

    for name, value in lab.s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = Bucket(lab, new_bucket())
    store = S3ObjectStore(bucket.name, "team", endpoint_url=lab.s3.endpoint)
    store.ensure_bucket()
    grants = store.upload_grants(["jobs/r1/train/"], 3600)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "log").write_bytes(log)
    (job_dir / "rc").write_text("0\n")
    config = AgentConfig(
        "r1", "train", "here", store.url, "manifests/r1/train.json", 1 << 22, None,
        str(tmp_path / "known"), grants=grants or [],
    )  # fmt: skip
    (job_dir / "agent.json").write_text(config.to_json())
    return bucket, job_dir, [sys.executable, "-m", "dstack.agent", str(job_dir)]


def test_an_agent_started_again_after_the_seal_changes_nothing(
    agent_lab: AgentLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever looks at a job (a supervisor, recovery) may start its agent again at any time,
    also just after it sealed the job: the job's sealed status must stay as it is."""
    bucket, job_dir, agent = local_agent(agent_lab, tmp_path, monkeypatch, b"1.0 done\n")
    key = f"team/{status_key('r1', 'train')}"
    subprocess.run(agent, check=True, timeout=60)
    sealed = bucket.client.head_object(Bucket=bucket.name, Key=key)
    assert bucket.status("r1", "train")["state"] == "sealed"
    subprocess.run(agent, check=True, timeout=60)  # again, as after a look that raced the seal
    assert bucket.client.head_object(Bucket=bucket.name, Key=key)["ETag"] == sealed["ETag"]
    assert host_status(job_dir)["state"] == "sealed"
    assert bucket.log("r1", "train") == b"1.0 done\n"
    assert (job_dir / "agent.log").read_text().count(" watches ") == 1


def test_a_log_part_sent_again_after_a_crash_is_the_same_part(
    agent_lab: AgentLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent killed while it sent a part (its length recorded, the part maybe stored)
    sends those very bytes again, though the log grew meanwhile: a reader that took the
    first copy misses nothing."""
    bucket, job_dir, agent = local_agent(agent_lab, tmp_path, monkeypatch, b"1.0 a\n2.0 bb\n")
    (job_dir / "agent-state.json").write_text(json.dumps({"sending": 6}))
    subprocess.run(agent, check=True, timeout=60)
    parts = [bucket.get(k) for k in sorted(bucket.keys("jobs/r1/train/log/"))]
    assert parts == [b"1.0 a\n", b"2.0 bb\n"]
