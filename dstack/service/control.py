"""Changing a run's course: stop it (its supervisor stops the jobs, or this process does when
the supervisor is gone), or remove a finished run with its logs and untagged artifacts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dstack.service.runs import RunInfo

if TYPE_CHECKING:
    from dstack.service.session import Session

STOP_WAIT = 30.0  # seconds the supervisor is given to stop the jobs itself


@dataclass(frozen=True)
class Stopped:
    """The run after the stop; ``already``: it had ended before it was asked to."""

    run: RunInfo
    already: bool


@dataclass(frozen=True)
class Removed:
    """``kept_tagged``: the run is tagged, so its artifacts stay reachable through the tags."""

    name: str
    kept_tagged: bool


def stop(session: Session, name: str, abort: bool = False) -> Stopped:
    """TERM the run's jobs and KILL them after 10 s (``abort``: KILL at once)."""
    from dstack.execution import procs
    from dstack.tags import who

    state = session.state
    run = state.run(name)
    if run.finished:
        return Stopped(RunInfo.of(run, who()), already=True)
    state.update_run(name, stop_request="abort" if abort else "stop")
    deadline = time.monotonic() + STOP_WAIT
    while procs.alive(run.supervisor_pid, run.supervisor_start) and time.monotonic() < deadline:
        time.sleep(0.1)
        if state.run(name).finished:
            break
    if not state.run(name).finished:  # no supervisor left: stop the jobs from here
        _stop_jobs(session, name, abort)
        session.recover()
    return Stopped(RunInfo.of(state.run(name), who()), already=False)


def _stop_jobs(session: Session, name: str, abort: bool) -> None:
    from dstack.backends.registry import executor_of_job

    ctx = session.context()
    for job in session.state.jobs(name):
        if job.status == "running" and job.pid and job.job_dir:
            executor = executor_of_job(ctx, job)
            try:
                executor.adopt(job.job_dir, job.pid, job.pid_start).stop(abort=abort)
            finally:
                executor.close()


def remove(session: Session, name: str, force: bool = False) -> Removed:
    """Delete a finished run: its record here and in the store, its logs, and the artifacts
    nothing else uses. A tagged run is refused unless ``force`` (the tags keep its files)."""
    import shutil

    from dstack.errors import RunStateError
    from dstack.sharing import open_tags

    session.recover()
    state, store = session.state, session.store
    run = state.run(name)
    if not run.finished:
        raise RunStateError(
            f"Run {name} is {run.status}.", hint=f"stop it first: dstack stop {name}"
        )
    book = open_tags(state, store)
    tagged = book.of_run(name)
    if tagged and not force:
        raise RunStateError(
            f"Run {name} is tagged as {', '.join(repr(t) for t in tagged)}.",
            hint="delete the tag first (dstack tags delete TAG), or pass --force to "
            "remove the run record and keep the tagged artifacts",
        )
    referenced = book.referenced_manifests() | state.manifests_used_outside(name)
    for job in state.jobs(name):
        if job.manifest and job.manifest not in referenced and not job.reused_from:
            store.delete_manifest(job.manifest)
    if not tagged:
        store.delete_run(name)
    state.delete_run(name)
    shutil.rmtree(session.home.runs_dir / name, ignore_errors=True)
    return Removed(name, kept_tagged=bool(tagged))
