"""dstack's Python API: run workflows, wait for them, read their logs and artifacts, list and
stop runs, from a notebook or a script. The same calls as the CLI (dstack.service), in the
home named by DSTACK_HOME (default ~/.dstack)::

    import dstack

    run = dstack.run("train", repo="~/project", args=["--lr", "0.01"], detach=True)
    run.wait()
    print(run.status, run.exit_code)
    print(run.logs())
    for f in run.artifacts():
        print(f.job, f.path, f.size)
    run.download("outputs")
    dstack.runs()        # the runs `dstack ps` shows
    dstack.stop(name)

Errors are dstack.DstackError, the same paragraph (message and hint) the CLI prints.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dstack.errors import RunStateError
from dstack.offer import Scope
from dstack.service.artifacts import ArtifactFile
from dstack.service.review import CloudReview, Confirm
from dstack.service.runs import JobInfo, RunInfo
from dstack.service.session import Session, stderr_notes


class Run:
    """A run of this home, by name. Each call reads the run's current state."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Run({self.name!r})"

    def info(self) -> RunInfo:
        from dstack.service.runs import get_run

        with Session.open() as session:
            return get_run(session, self.name)

    @property
    def status(self) -> str:
        """submitted, waiting, running, done, failed or stopped."""
        return self.info().status

    @property
    def exit_code(self) -> int | None:
        """The target job's exit code (130: stopped), None while the run is going."""
        return self.info().exit_code

    def jobs(self) -> list[JobInfo]:
        from dstack.service.runs import jobs

        with Session.open() as session:
            return jobs(session, self.name)

    def wait(self, timeout: float | None = None) -> RunInfo:
        """Block until the run has ended; RunStateError after ``timeout`` seconds."""
        from dstack.service.start import wait

        with Session.open() as session:
            return wait(session, self.name, timeout)

    def logs(self, job: str | None = None, timestamps: bool = False) -> str:
        """The run's output so far (one job's with ``job``; with several jobs each line starts
        with its job's name)."""
        from dstack.service.start import write_logs

        out = io.StringIO()
        with Session.open() as session:
            write_logs(session, self.name, out, timestamps=timestamps, job=job)
        return out.getvalue()

    def artifacts(self) -> list[ArtifactFile]:
        """Every file the run's jobs saved."""
        from dstack.service.artifacts import list_artifacts

        with Session.open() as session:
            return [f for job in list_artifacts(session, self.name) for f in job.files]

    def download(self, target: str | Path | None = None) -> Path:
        """Write the run's files into ``target`` (default ./RUN); returns the folder."""
        from dstack.service.artifacts import download

        with Session.open() as session:
            folder = None if target is None else Path(target).expanduser()
            return download(session, self.name, folder).target

    def stop(self, abort: bool = False) -> RunInfo:
        return stop(self.name, abort)

    def remove(self, force: bool = False) -> None:
        """Delete the finished run, its logs and its untagged artifacts."""
        from dstack.service.control import remove

        with Session.open() as session:
            remove(session, self.name, force)


def run(
    workflow: str,
    args: Sequence[str] = (),
    *,
    repo: str | Path = ".",
    tag: str | None = None,
    backend: str | None = None,
    host: str | None = None,
    no_wait: bool = False,
    detach: bool = False,
    no_cache: bool = False,
    confirm: Confirm | None = None,
) -> Run:
    """Run ``workflow`` of the project at ``repo`` (any folder inside it), as `dstack run`.

    ``args`` are the words `dstack run WORKFLOW` takes after the name (`--lr 0.1` sets a
    declared variable, the rest is ${{ run.args }}). Attached (the default), the jobs' output
    streams to stdout and this call returns when the run has ended; ``detach=True`` returns
    at once. A run that needs cloud hosts calls ``confirm`` with their review (offer, price,
    every resource) and creates them only when it returns True; without it such a run is
    refused before anything is created."""
    from dstack.service.submit import RunRequest, submit
    from dstack.spec.files import find_repo_root

    if isinstance(args, str):
        raise TypeError(f"args is a list of words, e.g. {args.split()!r}, not one string")
    root = find_repo_root(Path(repo).expanduser())
    request = RunRequest(
        workflow, root, list(args), tag, Scope(backend, host, no_wait), detached=detach
    )
    with Session.open() as session:
        submitted = submit(session, request, confirm or _refuse, stderr_notes)
        _start(session, submitted.name, detach, no_cache)
    return Run(submitted.name)


def rerun(
    name: str, *, detach: bool = False, no_cache: bool = False, confirm: Confirm | None = None
) -> Run:
    """Run a recorded run's code snapshot and workflow spec again (cloud hosts: see run)."""
    from dstack.service.submit import resubmit

    with Session.open() as session:
        submitted = resubmit(session, name, detach, confirm or _refuse, stderr_notes)
        _start(session, submitted.name, detach, no_cache)
    return Run(submitted.name)


def _start(session: Session, name: str, detach: bool, no_cache: bool) -> None:
    from dstack.service.start import attach, run_attached, start_detached

    if detach:
        start_detached(session, name, no_cache)
    elif threading.current_thread() is threading.main_thread():
        run_attached(session, name, sys.stdout, sys.stderr, no_cache)
    else:  # signals reach only the main thread: the run gets a supervisor of its own
        start_detached(session, name, no_cache)
        attach(session, name, sys.stdout, sys.stderr)


def runs(all_runs: bool = False) -> list[RunInfo]:
    """Newest first: the active runs and the 10 latest finished ones (``all_runs``: all),
    teammates' runs included when the store is shared."""
    from dstack.service.runs import list_runs

    with Session.open() as session:
        return list_runs(session, all_runs)


def stop(name: str, abort: bool = False) -> RunInfo:
    """Stop a run: TERM its jobs, KILL after 10 s (``abort``: KILL at once); returns it
    stopped (or as it had already ended)."""
    from dstack.service.control import stop as stop_run

    with Session.open() as session:
        return stop_run(session, name, abort).run


def _refuse(review: CloudReview) -> bool:
    raise RunStateError(
        f"Run {review.run} needs cloud hosts ({', '.join(h.job for h in review.hosts)}); "
        "nothing was created.",
        hint="pass confirm=: a function that is given the review (review.hosts: offer, price, "
        "resources) and returns True to create them",
    )
