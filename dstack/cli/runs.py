"""`dstack run` and `dstack rerun`: submit a run and stay attached, or detach with -d."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dstack.cli.runargs import WorkflowCommand, workflow_tokens

if TYPE_CHECKING:
    from dstack.home import Home
    from dstack.state.db import State

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
    from dstack.backends.offers import check_backend
    from dstack.cli.common import open_state
    from dstack.runner.launch import prepare, record
    from dstack.spec.files import find_repo_root
    from dstack.storage.store import Store

    repo = find_repo_root(Path.cwd())
    tokens = workflow_tokens(ctx, repo)
    home, state = open_state()
    store = Store.open(home)
    check_backend(backend, home)
    placement = {"backend": backend, "host": host, "no_wait": no_wait}
    sub = prepare(home, state, store, repo, workflow, tokens, tag, placement)
    name = _create(
        home, state, sub.jobs, placement, lambda: record(state, store, sub, tag, detach), yes
    )
    _start(name, detach, no_cache, [j[0] for j in sub.jobs])


def rerun(
    run_name: str = typer.Argument(..., metavar="RUN"),
    detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-run up-to-date upstream jobs"),
    yes: bool = typer.Option(False, "-y", "--yes", help="Create cloud hosts without asking"),
) -> None:
    from dstack.cli.common import open_state
    from dstack.sharing import publish_run
    from dstack.storage.store import Store

    home, state = open_state()
    store = Store.open(home)
    old = state.run(run_name)
    jobs = [(j.workflow, j.spec, j.upstream) for j in state.jobs(run_name)]

    def create() -> str:
        created = state.create_run(
            old.workflow,
            old.repo_dir,
            old.args,
            old.variables,
            None,
            old.snapshot,
            jobs,
            detach,
            old.placement,
            taken=store.has_run,
        )
        publish_run(state, store, created)
        return created

    name = _create(home, state, jobs, old.placement, create, yes)
    sys.stderr.write(f"Re-running {run_name} (snapshot {old.snapshot['digest'][:12]}) as {name}\n")
    _start(name, detach, no_cache, [j[0] for j in jobs])


def _create(
    home: Home,
    state: State,
    jobs: list[tuple[str, dict[str, Any], list[str]]],
    placement: dict[str, Any],
    create: Callable[[], str],
    yes: bool,
) -> str:
    """Create the run; when some of its jobs need cloud hosts, check the Pulumi CLI first
    and have the hosts reviewed (the run is withdrawn when the answer is no)."""
    from dstack.config import cloud_limits
    from dstack.spec.jobspec import JobSpec
    from dstack.storage.store import Store

    if not cloud_limits(home):  # no cloud set up: nothing more to import or ask
        return create()
    from dstack.runner.clouds import cloud_jobs

    clouds = cloud_jobs(home, state, [JobSpec.from_dict(j[1]) for j in jobs], placement)
    if not clouds:
        return create()
    from dstack.backends.automation import require_cli
    from dstack.cli.review import review

    require_cli()  # before anything is recorded
    name = create()
    if not review(home, state, Store.open(home), name, clouds, yes):
        raise typer.Exit(1)
    return name


def _start(name: str, detach: bool, no_cache: bool, jobs: list[str]) -> None:
    from dstack.cli.common import open_state

    home, state = open_state()
    if detach:
        from dstack.runner.launch import start_detached

        start_detached(home, state, name, no_cache)
        sys.stderr.write(
            f"Run {name} started in the background.\n"
            f"Follow it: dstack attach {name}   Stop it: dstack stop {name}\n"
        )
        return
    from dstack.runner.supervisor import supervise

    sys.stderr.write(f"Run {name}: {' -> '.join(jobs)}\n")
    code = supervise(home, name, sys.stdout, sys.stderr, no_cache)
    final = state.run(name)
    sys.stderr.write(f"Run {name} {final.status}" + (f" (exit code {code})" if code else "") + "\n")
    raise typer.Exit(code)
