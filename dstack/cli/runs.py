"""`dstack run` and `dstack rerun`: submit a run and stay attached, or detach with -d."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dstack.cli.runargs import WorkflowCommand, workflow_tokens

if TYPE_CHECKING:
    from dstack.service.review import CloudReview, Confirm
    from dstack.service.session import Session
    from dstack.service.submit import Submitted

_RUN_HELP = """Run WORKFLOW (and the workflows it depends on) where it fits most cheaply: this
machine, a pool server, or a cloud VM created for the job (shown and confirmed first; -y
skips the question) and destroyed when it ends.

Arguments after WORKFLOW set declared variables (--lr 0.1); other words become ${{ run.args }},
and so does everything after `--`, untouched. A mistyped option (--detatch) is an error.
Logs stream live and the command exits with the job's exit code; Ctrl-C stops the run
(twice: kill at once). With -d it runs in the background: follow it with `dstack attach RUN`."""


def register(app: typer.Typer) -> None:
    app.command(
        help=_RUN_HELP,
        cls=WorkflowCommand,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)
    app.command(help="Run a finished run's recorded code snapshot and workflow spec again.")(rerun)


def run(
    ctx: typer.Context,
    workflow: str = typer.Argument(..., help="Workflow name from .dstack/"),
    detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background"),
    tag: str | None = typer.Option(None, "-t", "--tag", help="Tag the run when it succeeds"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-run up-to-date upstream jobs"),
    backend: str | None = typer.Option(
        None, "--backend", help="Only this backend: local, ssh, aws, gcp or azure"
    ),
    host: str | None = typer.Option(None, "--host", help="Only this host (a pool name, or local)"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Fail instead of waiting for a busy host"
    ),
    yes: bool = typer.Option(False, "-y", "--yes", help="Create cloud hosts without asking"),
) -> None:
    from dstack.cli.common import open_session
    from dstack.offer import Scope
    from dstack.service.session import stderr_notes
    from dstack.service.submit import RunRequest, submit
    from dstack.spec.files import find_repo_root

    repo = find_repo_root(Path.cwd())
    tokens = workflow_tokens(ctx, repo)
    session = open_session()
    request = RunRequest(workflow, repo, tokens, tag, Scope(backend, host, no_wait), detach)
    with _declined():
        submitted = submit(session, request, _confirm(yes), stderr_notes)
    _start(session, submitted, detach, no_cache)


def rerun(
    run_name: str = typer.Argument(..., metavar="RUN"),
    detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-run up-to-date upstream jobs"),
    yes: bool = typer.Option(False, "-y", "--yes", help="Create cloud hosts without asking"),
) -> None:
    from dstack.cli.common import open_session
    from dstack.service.session import stderr_notes
    from dstack.service.submit import resubmit

    session = open_session()
    with _declined():
        submitted = resubmit(session, run_name, detach, _confirm(yes), stderr_notes)
    sys.stderr.write(
        f"Re-running {run_name} (snapshot {submitted.snapshot[:12]}) as {submitted.name}\n"
    )
    _start(session, submitted, detach, no_cache)


def _confirm(yes: bool) -> Confirm:
    """Show the cloud hosts a run would create, then ask (-y: do not ask)."""

    def confirm(review: CloudReview) -> bool:
        from dstack.cli.plan import print_report

        title = f"Run {review.run} needs cloud hosts (preview by the Pulumi engine):"
        print_report(title, review.hosts, sys.stderr)
        return yes or _ask(review.run)

    return confirm


def _ask(run: str) -> bool:
    from dstack.errors import SpecError

    if not sys.stdin.isatty():
        raise SpecError(
            f"Run {run} would create the cloud hosts above, and there is no terminal to ask on.",
            hint="add -y to create them without asking",
        )
    return bool(typer.confirm("Create them and run?", default=False, err=True))


@contextmanager
def _declined() -> Iterator[None]:
    """A "no" to the cloud hosts: the service withdrew the run; say so and exit 1."""
    from dstack.service.review import Declined

    try:
        yield
    except Declined:
        sys.stderr.write("Nothing was created.\n")
        raise typer.Exit(1) from None


def _start(session: Session, submitted: Submitted, detach: bool, no_cache: bool) -> None:
    from dstack.service.start import run_attached, start_detached

    name = submitted.name
    if detach:
        start_detached(session, name, no_cache)
        sys.stderr.write(
            f"Run {name} started in the background.\n"
            f"Follow it: dstack attach {name}   Stop it: dstack stop {name}\n"
        )
        return
    sys.stderr.write(f"Run {name}: {' -> '.join(submitted.jobs)}\n")
    code = run_attached(session, name, sys.stdout, sys.stderr, no_cache)
    final = session.state.run(name)
    sys.stderr.write(f"Run {name} {final.status}" + (f" (exit code {code})" if code else "") + "\n")
    raise typer.Exit(code)
