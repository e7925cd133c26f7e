"""A recorded run's life as its caller sees it: started attached (this process supervises it)
or detached (a supervisor of its own), attached to again, its logs read or followed, waited
for."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

from dstack.errors import RunStateError

if TYPE_CHECKING:
    from dstack.service.runs import RunInfo
    from dstack.service.session import Session

POLL = 0.2  # seconds between looks at a run that is being waited for


def start_detached(session: Session, name: str, no_cache: bool = False) -> None:
    """Start the run's supervisor in its own session: it outlives this process."""
    from dstack.runner.launch import start_detached as launch

    launch(session.home, session.state, name, no_cache)


def run_attached(
    session: Session, name: str, out: TextIO, notes: TextIO, no_cache: bool = False
) -> int:
    """Supervise the run in this process until it ends: its jobs' output goes to ``out``,
    dstack's notes to ``notes``; Ctrl-C stops it (twice: at once). Returns its exit code."""
    from dstack.runner.supervisor import supervise

    return supervise(session.home, name, out, notes, no_cache)


def attach(session: Session, name: str, out: TextIO, notes: TextIO) -> int | None:
    """Follow a run of this home until it ends, forwarding its jobs' ports while they run
    (their URLs go to ``notes``); returns its exit code. Ctrl-C (KeyboardInterrupt) leaves
    the run going."""
    from dstack.runner.follow import follow
    from dstack.runner.ports import open_for_job
    from dstack.service.runs import require_local
    from dstack.ssh.forward import Forwards

    require_local(session, name)
    forwards = Forwards()
    try:
        return follow(
            session.home,
            session.state,
            name,
            out,
            keep_following=True,
            on_running=lambda job: open_for_job(session.home, session.state, job, forwards, notes),
        )
    finally:
        forwards.close()


def write_logs(
    session: Session,
    name: str,
    out: TextIO,
    keep_following: bool = False,
    timestamps: bool = False,
    job: str | None = None,
) -> int | None:
    """Write the run's logs (only ``job``'s, if given) to ``out``; with ``keep_following``
    until the run ends. Returns its exit code (None while it runs). A teammate's run: the
    logs its hosts' agents write to the shared store (dstack.service.agent_views)."""
    from dstack.runner.follow import follow

    if not session.state.has_run(name):
        return _teammate_logs(session, name, out, keep_following, timestamps, job)
    _check_job(name, job, [j.workflow for j in session.state.jobs(name)])
    return follow(session.home, session.state, name, out, keep_following, timestamps, job)


def _teammate_logs(
    session: Session,
    name: str,
    out: TextIO,
    keep_following: bool,
    timestamps: bool,
    job: str | None,
) -> int | None:
    from dstack.errors import NotFoundError
    from dstack.service.agent_views import live_run, write_teammate_logs
    from dstack.sharing import find_run

    run = find_run(session.state, session.store, name)
    _check_job(name, job, list(run.job_names))
    if not write_teammate_logs(session.store, run, out, keep_following, timestamps, job):
        raise NotFoundError(
            f"Run {name} is {run.owner}'s: its logs are on their machine.",
            hint=f"its artifacts are here: dstack artifacts list {name}",
        )
    return live_run(session.store, run).exit_code


def _check_job(name: str, job: str | None, jobs: list[str]) -> None:
    """A clear error for a job the run does not have."""
    if job is None or job in jobs:
        return
    from dstack.errors import NotFoundError
    from dstack.spec.suggest import did_you_mean

    raise NotFoundError(
        f"Run {name} has no job '{job}'.",
        hint=did_you_mean(job, jobs) or f"its jobs: {', '.join(jobs)}",
    )


def wait(session: Session, name: str, timeout: float | None = None) -> RunInfo:
    """The run once it has ended; RunStateError when ``timeout`` seconds pass first."""
    from dstack.service.runs import get_run

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = get_run(session, name)
        if run.finished:
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise RunStateError(
                f"Run {name} is still {run.status} after {timeout:g} s.",
                hint=f"wait longer, or stop it: dstack stop {name}",
            )
        time.sleep(POLL)
