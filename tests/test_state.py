"""The state database's typed rows: jobs keep the placement decided for them, updates set only
the columns given, and a database from an older dstack is upgraded in place."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import Project

from dstack.backends.cloud.ledger import Ledger
from dstack.home import Home
from dstack.hostinfo import GPUInfo, HostResources
from dstack.offer import Offer
from dstack.state import hosts
from dstack.state.db import State
from dstack.state.records import NewJob

GPU_OFFER = Offer(
    backend="aws",
    name="g5.xlarge",
    region="us-east-1",
    resources=HostResources(4, 16 * 2**30, 200 * 2**30, [GPUInfo("A10G", 24 * 2**30)]),
    price=1.006,
    spot=True,
)
HERE = Offer("local", "here", "local", HostResources(2, 2**30, 2**30), 0.0, own=True)

# A run and its job as dstack wrote them before jobs kept their placement (schema version 4).
VERSION_4 = """
CREATE TABLE runs (
    name TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL, repo_dir TEXT NOT NULL,
    args TEXT NOT NULL, variables TEXT NOT NULL, tag TEXT,
    supervisor_pid INTEGER, supervisor_start INTEGER, stop_request TEXT,
    exit_code INTEGER, detached INTEGER NOT NULL DEFAULT 0, snapshot TEXT NOT NULL,
    placement TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE jobs (
    run_name TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    workflow TEXT NOT NULL, position INTEGER NOT NULL, status TEXT NOT NULL,
    spec TEXT NOT NULL, upstream TEXT NOT NULL,
    started_at REAL, finished_at REAL, exit_code INTEGER, pid INTEGER, pid_start INTEGER,
    job_dir TEXT, cache_key TEXT, reused_from TEXT, manifest TEXT, error TEXT,
    record TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_name, workflow)
);
INSERT INTO runs VALUES ('old-otter-1', 'train', 'done', 1700000000, 1700000001, '/repo',
    '[]', '{}', NULL, NULL, NULL, NULL, 0, 0, '{"digest": "d"}', '{}');
INSERT INTO jobs VALUES ('old-otter-1', 'train', 0, 'done', '{"name": "train"}', '[]',
    1700000000, 1700000001, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}');
PRAGMA user_version = 4;
"""


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(Home(tmp_path))


def one_job(state: State, *placement: Offer) -> str:
    spec = {"name": "train", "commands": ["python train.py"]}
    return state.create_run(
        workflow="train",
        repo_dir="/repo",
        args=[],
        variables={},
        tag=None,
        snapshot={"digest": "d"},
        jobs=[NewJob("train", spec, placement=placement)],
    )


def test_a_job_reads_back_the_placement_decided_for_it(state: State) -> None:
    run = one_job(state, GPU_OFFER, HERE)
    (job,) = state.jobs(run)
    assert job.placement == (GPU_OFFER, HERE)
    assert job.job_spec.commands == ("python train.py",)
    assert job.spec == {"name": "train", "commands": ["python train.py"]}  # cache keys hash it


def test_an_update_sets_only_the_columns_given(state: State) -> None:
    run = one_job(state)
    assert state.update_job(run, "train", status="running", pid=42, record={"host": "h"})
    assert state.update_job(run, "train", error=None, exit_code=3)
    (job,) = state.jobs(run)
    assert (job.status, job.pid, job.record, job.exit_code) == ("running", 42, {"host": "h"}, 3)
    assert state.update_job(run, "train", status="done", only_if_active=True)
    assert not state.update_job(run, "train", status="failed", only_if_active=True)
    assert state.jobs(run)[0].status == "done"
    state.update_run(run, stop_request="stop", supervisor_pid=None)
    assert state.run(run).stop_request == "stop" and state.run(run).supervisor_pid is None


def test_a_column_outside_the_list_is_refused(state: State) -> None:
    run = one_job(state)
    with pytest.raises(TypeError):
        state.update_job(run, "train", run_name="elsewhere")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        state.update_run(run, name="renamed")  # type: ignore[call-arg]
    assert state.run_names() == {run}


def test_a_version_4_database_is_upgraded_and_keeps_its_runs(project: Project) -> None:
    project.home.mkdir()
    db = sqlite3.connect(project.home / "state.db")
    db.executescript(VERSION_4)
    db.close()
    assert [(r["name"], r["status"]) for r in project.ps()] == [("old-otter-1", "done")]
    project.workflows("workflows:\n  - name: hello\n    commands: [echo hi]\n")
    assert project.dstack("run", "hello", check=True).stdout == "hi\n"
    state = State(Home(project.home))
    (old,) = state.jobs("old-otter-1")
    assert old.placement == () and old.job_spec.name == "train"
    assert state.conn.execute("PRAGMA user_version").fetchone()[0] == 5


def test_a_slot_is_never_leased_twice_by_two_connections(tmp_path: Path) -> None:
    """A second process claims the host's only slot while the first has read the free slots
    but not yet taken one: it waits for the first and finds the host full, because reading
    and taking are one transaction. The slot is free again once the first run ends."""
    first, second = State(Home(tmp_path)), State(Home(tmp_path))
    runs = [one_job(first), one_job(first)]
    box = hosts.HostRecord("box", "10.0.0.7", 22, None, None, 1, {}, 0.0)
    assert hosts.put(first, host=box, replace=False)
    second_began = threading.Event()
    outcome: list[object] = []  # what the second claim returned or raised

    def claim_second() -> None:
        try:
            outcome.append(claim(second, runs[1]))
        except Exception as e:  # asserted on below
            outcome.append(e)

    racer = threading.Thread(target=claim_second)

    def between_read_and_write(sql: str) -> None:
        if sql.startswith("INSERT INTO leases") and not racer.is_alive() and not outcome:
            racer.start()
            second_began.wait(timeout=30)

    def second_begins(sql: str) -> None:
        if sql.startswith("BEGIN"):
            second_began.set()

    second.conn.set_trace_callback(second_begins)
    first.conn.set_trace_callback(between_read_and_write)
    taken = claim(first, runs[0])
    first.conn.set_trace_callback(None)
    racer.join(timeout=60)
    assert second_began.is_set() and not racer.is_alive()
    assert outcome == [None]
    assert taken == hosts.Lease("box", 0, runs[0], "train") and hosts.leases(second) == [taken]
    first.finish_run(runs[0], "done", 0)
    assert claim(second, runs[1]) == hosts.Lease("box", 0, runs[1], "train")


def claim(state: State, run: str) -> hosts.Lease | None:
    return hosts.claim_slot(state, host_name="box", slots=1, run_name=run, workflow="train")


def test_a_stack_update_sets_only_its_own_fields(state: State) -> None:
    ledger = Ledger(state)
    spec = {"backend": "aws", "name": "dstack-run-train"}
    ledger.record("dstack-run-train", "run", "train", spec, {"name": "g5.xlarge"})
    ledger.update("dstack-run-train", status="up", outputs={"address": "10.0.0.7"})
    ledger.update("dstack-run-train", error="quota")
    stack = ledger.get("dstack-run-train")
    assert stack is not None and stack.spec == spec and stack.offer == {"name": "g5.xlarge"}
    assert (stack.status, stack.outputs, stack.error) == ("up", {"address": "10.0.0.7"}, "quota")
    with pytest.raises(TypeError):
        ledger.update("dstack-run-train", run_name="elsewhere")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ledger.update("dstack-run-train", **{"status = 'up', name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ledger.update("dstack-run-train")
    assert [(s.name, s.run_name) for s in ledger.all()] == [("dstack-run-train", "run")]
