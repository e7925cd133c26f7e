"""Recovery: runs whose supervisor died are shown truthfully, never stuck as running forever.

When a job of such a run still runs, a new detached supervisor takes the run over (streaming
its log, syncing artifacts, starting what comes next), so `attach` works again. When none
does, jobs that ended get their artifacts sealed and their status from their exit code, and
jobs never started fail. Every view calls this first; it costs one query when nothing is active.
"""

from __future__ import annotations

import logging
import time

from dstack.errors import DstackError
from dstack.execution import procs
from dstack.home import Home
from dstack.state.db import RESUMING, State
from dstack.state.records import RunRecord
from dstack.storage.store import Store

STARTUP_GRACE = 10.0

log = logging.getLogger(__name__)


def _supervised(run: RunRecord) -> bool:
    """A live supervisor, or one being started (give it a few seconds to record itself)."""
    if run.supervisor_pid is None:
        return time.time() - run.created_at < STARTUP_GRACE
    if run.supervisor_pid == RESUMING:
        return time.time() - (run.supervisor_start or 0) < STARTUP_GRACE
    return procs.alive(run.supervisor_pid, run.supervisor_start)


def recover(home: Home, state: State, store: Store | None = None) -> None:
    for run in state.active_runs():
        if _supervised(run):
            continue
        from dstack.logs_setup import run_log

        store = store or Store.open(home)
        with run_log(home, run.name):
            log.info("the supervisor of run %s is gone; this process takes over", run.name)
            _recover_run(home, state, store, run)


def _recover_run(home: Home, state: State, store: Store, run: RunRecord) -> None:
    """Finish what ended; start a new supervisor when a job still runs."""
    from dstack.backends.base import Context
    from dstack.backends.registry import HERE, executor_of_job, open_backend
    from dstack.runner.finish import fail_pending, finish_job, finish_run
    from dstack.runner.from_store import finish_from_store
    from dstack.storage.manifest import StatCache

    cache = StatCache()
    ctx = Context(home, state, store)
    still_running = False
    for job in state.jobs(run.name):
        if job.finished:
            continue
        if job.status == "running" and job.pid and job.job_dir:
            stopped = bool(run.stop_request)
            try:
                executor = executor_of_job(ctx, job, patient=False)
            except DstackError as e:  # its cloud host was torn down: the job ended there
                if finish_from_store(home, state, store, job, stopped) is None:
                    fail_pending(state, job, f"its host is gone: {e.message}")
                continue
            try:
                try:
                    result = executor.adopt(job.job_dir, job.pid, job.pid_start).poll()
                except DstackError as e:  # its host does not answer now: a new supervisor retries
                    log.info("%s: its host does not answer (%s)", job.workflow, e.message)
                    if finish_from_store(home, state, store, job, stopped) is not None:
                        continue  # ... unless its agent sealed it: then it is over
                    result = None
                if result is None:
                    still_running = True
                    continue
                log.info("%s: ended with code %d", job.workflow, result.code)
                backend = open_backend(job.backend or HERE, ctx)
                done = finish_job(
                    home, state, store, backend, executor, job, result, stopped, cache
                )
                if backend.own:  # a created host is destroyed by its run's end or by gc
                    backend.release(job, done.files_safe, executor)
            finally:
                executor.close()
        elif job.status in ("submitted", "waiting"):
            fail_pending(state, job, "the supervisor ended before the job started")
    if not still_running:
        status, code = finish_run(state, store, run.name, run.workflow, bool(run.stop_request))
        log.info("run %s %s (exit code %d)", run.name, status, code)
    elif state.claim_supervision(run.name, run.supervisor_pid, run.supervisor_start):
        from dstack.runner.launch import start_detached

        log.info("a job of run %s still runs: starting a new supervisor", run.name)
        start_detached(home, state, run.name, no_cache=False)
