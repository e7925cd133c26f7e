"""Teammates see running jobs: from a second home sharing the bucket, `ps` lists a run started
elsewhere with its job's host and live status, and `logs` (-f) prints its log, all from what
the host's agent writes to the store; a run whose laptop died is shown as ended once sealed;
whatever a tampered bucket holds, ps and logs answer without a traceback.

Real parts: sshd in a network namespace (the host), SeaweedFS on its veth address (the bucket),
the dstack CLI in subprocesses (the laptop and the teammate). The readers of statuses and log
parts are also checked in process on a folder store.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import AgentLab, Project, wait_for
from test_agent import gate_file, supervisor_pid
from test_buckets import new_bucket, use_s3

from dstack.agent.keys import log_part_key, status_key
from dstack.service.agent_views import seen_by_agents
from dstack.sharing import SharedRun
from dstack.state.records import ACTIVE
from dstack.storage.joblogs import BATCH, PART_MAX, UNKNOWN, LogParts, parse_status
from dstack.storage.objects import LocalObjectStore

STEPS = """
workflows:
  - name: train
    commands:
      - echo "epoch 1"
      - until [ -s {gate} ]; do sleep 0.05; done
      - echo "epoch 2"
      - exit $(cat {gate})
"""


def status(run: str = "r1", job: str = "train", **changes: object) -> dict[str, object]:
    """A status as an agent writes it (dstack.agent.main Agent._status)."""
    return {
        "version": 1,
        "run": run,
        "job": job,
        "host": "box",
        "state": "running",
        "exit_code": None,
        "reason": None,
        "started_at": time.time() - 10,
        "heartbeat_at": time.time(),
        "log_parts": 0,
        "log_bytes": 0,
        "manifest": None,
        **changes,
    }


# the readers, in process ---------------------------------------------------------------------

TAMPERED = {
    "not JSON": b"{",
    "a list": b"[]",
    "nested too deep": b"[" * 100_000,
    "too long": json.dumps(status(reason="x" * 100_000)).encode(),
    "state unknown": json.dumps(status(state="exploded")).encode(),
    "exit code as text": json.dumps(status(exit_code="0")).encode(),
    "exit code as bool": json.dumps(status(exit_code=True)).encode(),
    "heartbeat NaN": json.dumps(status(heartbeat_at=float("nan"))).encode(),
    "host rewrites the terminal": json.dumps(status(host="\x1b[2Jbox")).encode(),
    "another job's": json.dumps(status(job="other")).encode(),
    "sealed without a code": json.dumps(status(state="sealed")).encode(),
    "negative parts": json.dumps(status(log_parts=-1)).encode(),
    "absurd parts": json.dumps(status(log_parts=10**30)).encode(),
    "heartbeat beyond floats": json.dumps(status(heartbeat_at=10**400)).encode(),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_status_is_unknown_with_its_reason(case: str) -> None:
    seen = parse_status("r1", "train", TAMPERED[case])
    assert seen.state == UNKNOWN and seen.host is None
    assert seen.problem and "jobs/r1/train/status.json" in seen.problem
    assert "\x1b" not in seen.problem


def test_a_good_status_is_read_as_written() -> None:
    seen = parse_status("r1", "train", json.dumps(status(log_parts=3, log_bytes=70)).encode())
    assert (seen.state, seen.host, seen.log_parts, seen.log_bytes) == ("running", "box", 3, 70)
    assert seen.live and not seen.quiet(time.time())
    assert seen.quiet(time.time() + 61), "no heartbeat for a minute: quiet"


def test_log_parts_are_read_in_order_up_to_a_gap_or_a_part_too_big(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    for n, text in enumerate([b"1 a\n", b"2 b\n"]):
        store.put_bytes(log_part_key("r1", "train", n), text)
    store.put_bytes("jobs/r1/train/log/evil", b"1 EVIL\n")  # stray names are never read
    store.put_bytes("jobs/r1/train/log/0000000000002", b"1 EVIL\n")
    store.put_bytes(log_part_key("r1", "train", 3), b"4 after the gap\n")
    parts = LogParts(store, "r1", "train")
    assert read(parts, counted=0) == b"1 a\n2 b\n"
    assert parts.stopped is None, "a part not written yet is waited for"
    store.put_bytes(log_part_key("r1", "train", 2), b"3 c\n")
    assert read(parts, counted=0) == b"3 c\n4 after the gap\n", "only the new parts"
    # a gap where the status counts parts: read up to it, then stop for good
    gap = LogParts(store, "r1", "gap")
    store.put_bytes(log_part_key("r1", "gap", 0), b"1 a\n")
    store.put_bytes(log_part_key("r1", "gap", 2), b"1 EVIL\n")
    assert read(gap, counted=3) == b"1 a\n"
    assert gap.stopped and "part 1 of the 3" in gap.stopped
    store.put_bytes(log_part_key("r1", "gap", 1), b"1 late\n")
    assert read(gap, counted=3) == b""
    big = LogParts(store, "r1", "big")
    store.put_bytes(log_part_key("r1", "big", 0), b"1 a\n")
    store.put_bytes(log_part_key("r1", "big", 1), b"x" * (PART_MAX + 1))
    assert read(big, counted=2) == b"1 a\n"
    assert big.stopped and "part 1 is over" in big.stopped


def test_a_long_log_is_read_whole_in_batches(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    lines = [f"{n} line {n}\n".encode() for n in range(3 * BATCH + 5)]
    for n, line in enumerate(lines):
        store.put_bytes(log_part_key("r1", "train", n), line)
    parts = LogParts(store, "r1", "train")
    batches = list(parts.read_new(counted=2 * BATCH, more=True))
    assert b"".join(batches) == b"".join(lines) and len(batches) > 3
    assert parts.bytes == len(b"".join(lines))


def read(parts: LogParts, counted: int) -> bytes:
    return b"".join(parts.read_new(counted))


def teammate_record(name: str = "r1", jobs: tuple[str, ...] = ("train",)) -> SharedRun:
    return SharedRun(
        name=name,
        workflow=jobs[-1],
        status="submitted",
        created_at=time.time() - 100,
        finished_at=None,
        exit_code=None,
        tag=None,
        owner="mate@laptop",
        manifests={},
        job_names=jobs,
    )


def test_a_teammates_run_is_shown_as_its_agents_say() -> None:
    run, now = teammate_record(jobs=("prep", "train")), time.time()
    sealed = parse_status(
        "r1", "prep", json.dumps(status(job="prep", state="sealed", exit_code=0)).encode()
    )
    running = parse_status("r1", "train", json.dumps(status()).encode())
    seen = seen_by_agents(run, {"prep": sealed, "train": running}, now)
    assert (seen.status, seen.host, seen.agents) == ("running", "box", "running")
    assert seen_by_agents(run, {"prep": sealed, "train": running}, now + 120).agents == "quiet"
    failed = parse_status(
        "r1", "train", json.dumps(status(state="sealed", exit_code=3, host="gpu2")).encode()
    )
    ended = seen_by_agents(run, {"prep": sealed, "train": failed}, now)
    assert (ended.status, ended.exit_code, ended.agents, ended.host) == (
        "failed",
        3,
        "ended",
        "box, gpu2",
    )
    assert ended.finished and ended.finished_at is not None
    unknown = parse_status("r1", "train", b"{")
    assert seen_by_agents(run, {"prep": sealed, "train": unknown}, now).agents == UNKNOWN
    waiting = seen_by_agents(run, {"prep": sealed, "train": None}, now)
    assert (waiting.status, waiting.agents) == ("submitted", None), "the next job not started"
    assert seen_by_agents(run, {"prep": None, "train": None}, now).host is None


# a real host, a real bucket, two homes -----------------------------------------------------------


class Lines:
    """The lines a process writes to stdout, collected as they come."""

    def __init__(self, stream: object) -> None:
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append((time.time(), line.rstrip("\n")))

    def text(self) -> list[str]:
        return [line for _, line in self.lines]


@pytest.fixture
def two_homes(
    project: Project, agent_lab: AgentLab, tmp_path: Path
) -> tuple[Project, Project, str]:
    """The owner (with the pool host box) and a teammate, sharing one bucket."""
    bucket = new_bucket()
    use_s3(project, agent_lab.s3, bucket)
    project.dstack(*agent_lab.host.pool_add_args("box"), check=True)
    mate = Project(project.root, tmp_path / "mate-home")
    use_s3(mate, agent_lab.s3, bucket)
    mate.procs = project.procs  # the owner's cleanup ends the teammate's processes too
    return project, mate, bucket


def mates_view(mate: Project, run: str) -> dict[str, object]:
    found = [r for r in mate.ps() if r["name"] == run]
    return found[0] if found else {}


def test_a_teammate_sees_the_running_job_and_follows_its_log(
    two_homes: tuple[Project, Project, str], agent_lab: AgentLab, tmp_path: Path
) -> None:
    owner, mate, _ = two_homes
    gate = gate_file(agent_lab, tmp_path)
    owner.workflows(STEPS.format(gate=gate))
    owner.dstack("run", "train", "--host", "box", "-d", check=True)
    run = owner.ps()[0]["name"]
    wait_for(lambda: mates_view(mate, run).get("status") == "running", 60, what="running")
    seen = mates_view(mate, run)
    assert (seen["host"], seen["agents"]) == ("box", "running")
    table = mate.dstack("ps", check=True).stdout.splitlines()
    assert table[0].split() == ["RUN", "WORKFLOW", "STATUS", "HOST", "SUBMITTED", "TOOK", "TAG"]
    row = next(line for line in table if line.startswith(run))
    assert row.split()[1:4] == ["train", "running", "box"] and len(row) <= 80
    # its log so far, while it runs
    wait_for(lambda: "epoch 1" in mate.dstack("logs", run).stdout, 30, what="the log so far")
    assert "epoch 2" not in mate.dstack("logs", run, check=True).stdout
    # following: a line the job writes after the follow began, then the end
    follow = mate.popen("logs", run, "-f")
    lines = Lines(follow.stdout)
    wait_for(lambda: "epoch 1" in lines.text(), 30, what="the follow to begin")
    gate.write_text("0")
    wait_for(lambda: "epoch 2" in lines.text(), 30, what="the new line followed")
    assert follow.wait(timeout=60) == 0, follow.stderr.read() if follow.stderr else ""
    lines.thread.join(timeout=10)
    assert lines.text() == ["epoch 1", "epoch 2"]
    # after the end: the teammate reads what the owner reads
    wait_for(lambda: mates_view(mate, run).get("status") == "done", 60, what="done")
    assert mate.dstack("logs", run, check=True).stdout == owner.dstack("logs", run).stdout
    stamped = mate.dstack("logs", run, "--timestamps", check=True).stdout
    assert stamped == owner.dstack("logs", run, "--timestamps").stdout


def test_a_run_whose_laptop_died_is_shown_as_ended_once_sealed(
    two_homes: tuple[Project, Project, str], agent_lab: AgentLab, tmp_path: Path
) -> None:
    owner, mate, bucket = two_homes
    gate = gate_file(agent_lab, tmp_path)
    owner.workflows(STEPS.format(gate=gate))
    owner.dstack("run", "train", "--host", "box", "-d", check=True)
    run = owner.ps()[0]["name"]
    wait_for(lambda: mates_view(mate, run).get("status") == "running", 60, what="running")
    os.kill(supervisor_pid(owner, run), signal.SIGKILL)  # the owner's laptop is gone
    follow = mate.popen("logs", run, "-f")
    lines = Lines(follow.stdout)
    wait_for(lambda: "epoch 1" in lines.text(), 30, what="the follow to begin")
    gate.write_text("3")
    assert follow.wait(timeout=60) == 0, "the follow ends with the seal, not the record"
    lines.thread.join(timeout=10)
    assert lines.text() == ["epoch 1", "epoch 2"]
    seen = mates_view(mate, run)
    assert (seen["status"], seen["exit_code"], seen["agents"]) == ("failed", 3, "ended")
    record = agent_lab.s3.client().get_object(Bucket=bucket, Key=f"team/runs/{run}.json")
    assert json.loads(record["Body"].read())["status"] in ACTIVE, "its record never ended"
    row = next(r for r in mate.dstack("ps", check=True).stdout.splitlines() if r.startswith(run))
    assert "failed (3)" in row


def test_a_tampered_status_or_log_part_never_crashes_ps_or_logs(
    project: Project, agent_lab: AgentLab
) -> None:
    bucket = new_bucket()
    use_s3(project, agent_lab.s3, bucket)
    s3 = agent_lab.s3.client()

    def put(key: str, data: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"team/{key}", Body=data)

    put(
        "runs/r1.json",
        json.dumps(
            {
                "name": "r1",
                "workflow": "train",
                "status": "running",
                "created_at": time.time(),
                "finished_at": None,
                "exit_code": None,
                "tag": None,
                "owner": "mate@laptop",
                "manifests": {},
                "home": "mates-home",
                "jobs": [{"workflow": "train", "status": "running", "exit_code": None}],
            }
        ).encode(),
    )
    put(log_part_key("r1", "train", 0), b"1700000000.0 first\n")
    put(log_part_key("r1", "train", 1), b"1700000001.0 second\n")
    put("jobs/r1/train/log/evil", b"1 EVIL\n")
    put(log_part_key("r1", "train", 3), b"1 EVIL after the gap\n")
    for case in ("not JSON", "exit code as text", "host rewrites the terminal", "a list"):
        put(status_key("r1", "train"), TAMPERED[case])
        listed = project.dstack("ps")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith("r1"))
        assert row.split()[3] == "unknown", case
        assert "shown as unknown" in listed.stderr
        assert mates_view(project, "r1")["agents"] == UNKNOWN
        logs = project.dstack("logs", "r1")
        assert (logs.returncode, logs.stdout) == (0, "first\nsecond\n"), logs.stderr
    # an agent not heard from for two minutes: its host may be gone
    put(status_key("r1", "train"), json.dumps(status(heartbeat_at=time.time() - 120)).encode())
    listed = project.dstack("ps", check=True)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("r1"))
    assert row.split()[3:5] == ["running?", "box"]
    assert "r1: its agent on box was last heard from 2m ago" in listed.stderr
    # a status that counts the missing part: the log is shown up to the gap, and says so
    put(
        status_key("r1", "train"),
        json.dumps(status(state="sealed", exit_code=0, log_parts=4)).encode(),
    )
    logs = project.dstack("logs", "r1", "-f", timeout=30)
    assert (logs.returncode, logs.stdout) == (0, "first\nsecond\n"), logs.stderr
    assert "shown up to part 2: part 2 of the 4 its host counted is missing" in logs.stderr
    assert mates_view(project, "r1")["status"] == "done"
