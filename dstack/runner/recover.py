"""Recovery: runs whose supervisor died are shown truthfully, never stuck as running forever.

A job whose process still runs stays `running` (it really is); one that ended gets its
artifacts sealed and its status from its exit code; jobs never started fail. Every view calls
this first; it costs one query when nothing is active.
"""

from __future__ import annotations

import time

from dstack.execution import procs
from dstack.home import Home
from dstack.state.db import State
from dstack.storage.store import Store

STARTUP_GRACE = 10.0


def recover(home: Home, state: State, store: Store | None = None) -> None:
    for run in state.active_runs():
        if run.supervisor_pid is None and time.time() - run.created_at < STARTUP_GRACE:
            continue
        if procs.alive(run.supervisor_pid, run.supervisor_start):
            continue
        from dstack.execution.factory import executor_of_job
        from dstack.runner.finish import fail_pending, finish_job, finish_run
        from dstack.storage.manifest import StatCache

        store = store or Store.open(home)
        cache = StatCache()
        still_running = False
        for job in state.jobs(run.name):
            if job.finished:
                continue
            if job.status == "running" and job.pid and job.job_dir:
                executor = executor_of_job(home, store, state, job.record)
                result = executor.adopt(job.job_dir, job.pid, job.pid_start).poll()
                if result is None:
                    still_running = True
                    continue
                finish_job(home, state, store, executor, job, result, bool(run.stop_request), cache)
            elif job.status in ("submitted", "waiting"):
                fail_pending(state, job, "the supervisor ended before the job started")
        if not still_running:
            finish_run(state, run.name, run.workflow, stopped=bool(run.stop_request))
