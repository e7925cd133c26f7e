"""Submitting a run: plan and check everything, snapshot the code, record the run, start it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dstack import secrets
from dstack.execution import procs
from dstack.home import Home
from dstack.offer import Scope
from dstack.runner.inputs import external_inputs
from dstack.runner.plan import check_plan, plan_run
from dstack.sharing import claim_run, open_tags
from dstack.snapshot import Snapshot, capture
from dstack.state.db import State
from dstack.state.records import NewJob
from dstack.storage.manifest import StatCache
from dstack.storage.store import Store


@dataclass(frozen=True)
class Submission:
    workflow: str
    repo: Path
    args: list[str]
    variables: dict[str, Any]
    snapshot: Snapshot
    jobs: list[NewJob]
    scope: Scope


def prepare(
    home: Home,
    state: State,
    store: Store,
    repo: Path,
    workflow: str,
    tokens: list[str],
    tag: str | None,
    scope: Scope,
) -> Submission:
    """Everything that can be refused is refused here, before a run exists; each job's
    placement is decided here, once."""
    plan = plan_run(home.root / "cache" / "plans", repo, workflow, tokens)
    placements = check_plan(plan, repo, home, state, scope)
    secrets.job_env(home)  # a secret stored under a name no job can be given is refused now
    tags = open_tags(state, store)
    for job in plan.jobs:
        external_inputs(state, tags, job.spec)
    if tag is not None:
        tags.check_free(tag)
    hashes = StatCache.load(home.hash_cache)  # unchanged files: no re-hash
    snapshot = capture(repo, store, hashes)
    hashes.save()
    jobs = [
        NewJob(j.data["name"], j.data, j.upstream, placements[j.data["name"]]) for j in plan.jobs
    ]
    return Submission(workflow, repo, plan.run_args, plan.variables, snapshot, jobs, scope)


def record(state: State, store: Store, sub: Submission, tag: str | None, detached: bool) -> str:
    """The run in SQLite, then its record in the store for teammates (which claims its name)."""
    return state.create_run(
        workflow=sub.workflow,
        repo_dir=str(sub.repo),
        args=sub.args,
        variables=sub.variables,
        tag=tag,
        snapshot={**sub.snapshot.to_dict(), "key": sub.snapshot.key},
        jobs=sub.jobs,
        detached=detached,
        placement=sub.scope,
        claim=partial(claim_run, state, store),
    )


def start_detached(home: Home, state: State, run_name: str, no_cache: bool) -> int:
    """Start the supervisor as its own session so it outlives this terminal."""
    log = home.runs_dir / run_name / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dstack.runner.detached", run_name]
    if no_cache:
        command.append("--no-cache")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    state.update_run(run_name, supervisor_pid=proc.pid, supervisor_start=procs.start_time(proc.pid))
    return proc.pid
