"""The screen before a run creates cloud hosts: each job's offer, its cost cap and every
resource of its stack as the Pulumi engine previews it; then a question (-y skips it).

The stacks are recorded in SQLite before the preview, so whatever happens next (a failed
preview, a "no", Ctrl-C) is undone from that record and nothing is left behind."""

from __future__ import annotations

import os
import sys

from dstack.home import Home
from dstack.runner.clouds import CloudJob
from dstack.state.db import State
from dstack.storage.store import Store


def review(
    home: Home, state: State, store: Store, run: str, jobs: list[CloudJob], yes: bool
) -> bool:
    """Record, preview, show and confirm the run's cloud hosts; False when declined (the run
    and its stacks are then removed)."""
    from dstack.cli.plan import print_report, report_entry, ssh_report
    from dstack.execution import procs
    from dstack.runner.clouds import preview_stacks, record_stacks

    # This process holds the run while the user reads: views must not think it abandoned.
    state.update_run(
        run, supervisor_pid=os.getpid(), supervisor_start=procs.start_time(os.getpid())
    )
    try:
        specs = record_stacks(home, state, run, jobs)
        previews = preview_stacks(home, specs, _note)
        report = [
            report_entry(
                job.spec.name, job.offer, resources, ssh_report(job.limits, spec.allowed_cidr)
            )
            for job, spec, resources in zip(jobs, specs, previews, strict=True)
        ]
        print_report(
            f"Run {run} needs cloud hosts (preview by the Pulumi engine):", report, sys.stderr
        )
        approved = yes or _confirm(run)
    except BaseException:
        _undo(home, state, store, run)
        raise
    if not approved:
        _undo(home, state, store, run)
        sys.stderr.write("Nothing was created.\n")
    return approved


def _confirm(run: str) -> bool:
    import typer

    from dstack.errors import SpecError

    if not sys.stdin.isatty():
        raise SpecError(
            f"Run {run} would create the cloud hosts above, and there is no terminal to ask on.",
            hint="add -y to create them without asking",
        )
    return bool(typer.confirm("Create them and run?", default=False, err=True))


def _note(text: str) -> None:
    sys.stderr.write(f"dstack: {text}\n")


def _undo(home: Home, state: State, store: Store, run: str) -> None:
    """Remove the run's recorded stacks, then the run itself."""
    from dstack.backends.ledger import Ledger
    from dstack.backends.teardown import teardown

    for stack in Ledger(state).all(run):
        teardown(home, state, stack.name, _note)
    if not Ledger(state).all(run):
        store.delete_run(run)
        state.delete_run(run)
