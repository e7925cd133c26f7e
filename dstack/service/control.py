"""Changing a run's course: stop it (its supervisor stops the jobs, or this process does when
the supervisor is gone), or remove a finished run with its logs and untagged artifacts.

A run of a teammate's home (found in the shared store), or a job whose host this process
cannot reach over SSH, is stopped through the store: a stop request its host's agent reads
(dstack.agent.stop); its status in the store then says who stopped it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dstack.service.runs import RunInfo

if TYPE_CHECKING:
    from dstack.service.session import Session
    from dstack.storage.store import Store

STOP_WAIT = 30.0  # seconds the supervisor is given to stop the jobs itself
CONFIRM_WAIT = 60.0  # seconds agents are given to confirm a stop asked through the store
CONFIRM_EVERY = 0.5

log = logging.getLogger(__name__)


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
    if not state.has_run(name):
        return _stop_shared(session, name, abort)
    run = state.run(name)
    if run.finished:
        return Stopped(RunInfo.of(run, who()), already=True)
    state.update_run(name, stop_request="abort" if abort else "stop")
    deadline = time.monotonic() + STOP_WAIT
    while procs.alive(run.supervisor_pid, run.supervisor_start) and time.monotonic() < deadline:
        time.sleep(0.1)
        if state.run(name).finished:
            break
    through_store: list[str] = []
    if not state.run(name).finished:  # no supervisor left: stop the jobs from here
        through_store = _stop_jobs(session, name, abort)
        session.recover()
    info = RunInfo.of(state.run(name), who())
    if through_store and not info.finished:  # stopped on the host; recorded here once it answers
        _confirmed(session.store, name, through_store)
        info = dataclasses.replace(info, status="stopped")
    return Stopped(info, already=False)


def _stop_jobs(session: Session, name: str, abort: bool) -> list[str]:
    """Stop the run's jobs over SSH; a job whose host does not answer but whose agent reads
    the store is asked through the store. The jobs asked so."""
    from dstack.backends.registry import executor_of_job
    from dstack.errors import DstackError
    from dstack.runner.agents import request_stop

    ctx = session.context()
    asked = []
    for job in session.state.jobs(name):
        if job.status == "running" and job.pid and job.job_dir:
            try:  # a job with an agent has another way: its host is not waited for long
                executor = executor_of_job(ctx, job, patient=not job.agent)
                try:
                    executor.adopt(job.job_dir, job.pid, job.pid_start).stop(abort=abort)
                finally:
                    executor.close()
            except DstackError as e:
                if not job.agent:
                    raise
                log.warning("%s: %s; asking its agent through the store", job.workflow, e.message)
                request_stop(session.store, name, job.workflow, abort)
                asked.append(job.workflow)
    return asked


def _stop_shared(session: Session, name: str, abort: bool) -> Stopped:
    """Stop a teammate's run: ask its jobs' agents through the store and wait for them to
    say they stopped."""
    from dstack.errors import RunStateError
    from dstack.runner.agents import agent_jobs, request_stop, stored_state
    from dstack.sharing import find_run
    from dstack.tags import who

    store = session.store
    run = find_run(session.state, store, name)
    info = RunInfo.of(run, run.owner)
    if run.finished:
        return Stopped(info, already=True)
    jobs = agent_jobs(store, name)
    if not jobs:
        raise RunStateError(
            f"Run {name} is {run.owner}'s, and none of its jobs has an agent that reads "
            f"stop requests from {store.url}.",
            hint=f"ask {run.owner} to stop it (dstack stop {name} in their home)",
        )
    running = [j for j in jobs if stored_state(store, name, j)[0] != "sealed"]
    for job in running:
        request_stop(store, name, job, abort)
    ended = _confirmed(store, name, jobs)
    if running:
        log.info("run %s of %s stopped through the store by %s", name, run.owner, who())
    # its owner's home records the run's end; until then the jobs' statuses tell it
    stopped = any(r and r.startswith("stopped by") for r, _ in ended)
    status = "stopped" if stopped else "done" if all(c == 0 for _, c in ended) else "failed"
    return Stopped(dataclasses.replace(info, status=status), already=not running)


def _confirmed(store: Store, name: str, jobs: list[str]) -> list[tuple[str | None, int | None]]:
    """Wait until the agents of ``jobs`` sealed them; the reasons and exit codes they give.
    RunStateError when they do not within CONFIRM_WAIT: the request stays, for when they
    can read it."""
    from dstack.errors import RunStateError
    from dstack.runner.agents import stored_state

    deadline = time.monotonic() + CONFIRM_WAIT
    while True:
        seen = {job: stored_state(store, name, job) for job in jobs}
        if all(state == "sealed" for state, _, _ in seen.values()):
            return [(reason, code) for _, reason, code in seen.values()]
        if time.monotonic() > deadline:
            waiting = ", ".join(j for j, (state, _, _) in seen.items() if state != "sealed")
            raise RunStateError(
                f"Asked the agents of run {name} to stop {waiting} through {store.url}, "
                f"but they have not said so within {CONFIRM_WAIT:.0f} s.",
                hint="their hosts may be down or cut off from the store; the request stays, "
                "and an agent that reads it stops its job (dstack ps shows the run)",
            )
        time.sleep(CONFIRM_EVERY)


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
