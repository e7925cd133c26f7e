"""Looking at runs: ps, logs, attach, stop, rm, inspect, workflows, schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dstack.cli.common import age, duration, open_session, print_json, table

if TYPE_CHECKING:
    from dstack.service.runs import RunInfo

JSON = typer.Option(False, "--json", help="Print JSON instead of a table")


def register(app: typer.Typer) -> None:
    app.command(
        help="List runs: active ones and the latest finished (-a: all). HOST: where running "
        "jobs are. A teammate's active run is shown as its jobs' agents say in the store: "
        "'running?' when none was heard from for a minute, done or failed once all are sealed."
    )(ps)
    app.command(help="Print a run's logs (-f: follow until it ends).")(logs)
    app.command(
        help="Follow a running run's logs (and forward its ports); Ctrl-C detaches, the run goes on."
    )(attach)
    app.command(help="Stop a run: TERM its jobs, KILL after 10 s (-x: KILL at once).")(stop)
    app.command(help="Delete a finished run, its logs and untagged artifacts.")(rm)
    app.command(help="Show a run's reproducibility record: code, spec, variables, inputs, host.")(
        inspect
    )
    app.command(help="List the workflows in .dstack/.")(workflows)
    app.command(help="Print the JSON Schema of .dstack/workflows.yaml.")(schema)


def ps(
    all_runs: bool = typer.Option(False, "-a", "--all", help="Include all finished runs"),
    as_json: bool = JSON,
) -> None:
    """HOST (shown when a run has one) is where its running jobs are; a teammate's active run
    is shown as its jobs' agents say in the store: `running?` when none was heard from for a
    minute, ended (done or failed) once all are sealed, `unknown` when a status is unreadable.
    --json has the same as `host`, `seen_at` (the oldest last heartbeat) and `agents`."""
    from dstack.service.runs import list_runs, stacks_left_behind
    from dstack.tags import who

    session = open_session()
    runs = list_runs(session, all_runs)
    if as_json:
        print_json([r.to_dict() for r in runs])
        return
    if not runs:
        sys.stderr.write("No runs yet. Start one with `dstack run WORKFLOW`.\n")
        return
    me = who()
    hosts = any(r.host for r in runs)
    table(
        ["RUN", "WORKFLOW", "STATUS", *(["HOST"] if hosts else []), "SUBMITTED", "TOOK", "TAG"],
        [
            [
                r.name + ("" if r.owner == me else f" ({r.owner.partition('@')[0]})"),
                r.workflow,
                _status(r),
                *([r.host or ""] if hosts else []),
                age(r.created_at),
                duration(r.created_at, r.finished_at),
                r.tag or "",
            ]
            for r in runs
        ],
        shrink=("WORKFLOW", "TAG", "HOST"),
    )
    for r in runs:
        if r.agents == "quiet":
            sys.stderr.write(
                f"{r.name}: its agent on {r.host} was last heard from {age(r.seen_at)}; "
                "the host may be down or cut off from the store.\n"
            )
    left = stacks_left_behind(session)
    if left:
        sys.stderr.write(
            f"{left} cloud stack{'s' if left > 1 else ''} of ended runs may still cost money: "
            "see `dstack gc --dry-run`.\n"
        )


def _status(run: RunInfo) -> str:
    if run.agents == "unknown":
        return "unknown"
    text = run.status + (f" ({run.exit_code})" if run.exit_code else "")
    return f"{text}?" if run.agents == "quiet" else text


def logs(
    run_name: str = typer.Argument(..., metavar="RUN"),
    follow_: bool = typer.Option(False, "-f", "--follow", help="Keep following until the run ends"),
    timestamps: bool = typer.Option(False, "--timestamps", help="Show when each line was written"),
    workflow: str | None = typer.Option(None, "-w", "--workflow", help="Only this job's log"),
) -> None:
    from dstack.service.start import write_logs

    try:
        write_logs(open_session(), run_name, sys.stdout, follow_, timestamps, workflow)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def attach(run_name: str = typer.Argument(..., metavar="RUN")) -> None:
    from dstack.service.start import attach as follow_run

    session = open_session()
    try:
        code = follow_run(session, run_name, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write(f"\nDetached; {run_name} goes on. Stop it with: dstack stop {run_name}\n")
        raise typer.Exit(130) from None
    sys.stderr.write(f"Run {run_name} {session.state.run(run_name).status}\n")
    raise typer.Exit(code or 0)


def stop(
    run_name: str = typer.Argument(..., metavar="RUN"),
    abort: bool = typer.Option(False, "-x", "--abort", help="Kill at once, no grace period"),
) -> None:
    from dstack.service.control import stop as stop_run

    stopped = stop_run(open_session(), run_name, abort)
    if stopped.already:
        sys.stderr.write(f"Run {run_name} is already {stopped.run.status}.\n")
    else:
        sys.stderr.write(f"Run {run_name} {stopped.run.status}.\n")


def rm(
    run_name: str = typer.Argument(..., metavar="RUN"),
    force: bool = typer.Option(
        False, "--force", help="Remove even a tagged run's record (tagged artifacts stay reachable)"
    ),
) -> None:
    from dstack.service.control import remove

    removed = remove(open_session(), run_name, force)
    kept = " (tagged artifacts kept)" if removed.kept_tagged else ""
    sys.stderr.write(f"Removed run {run_name}{kept}.\n")


def inspect(run_name: str = typer.Argument(..., metavar="RUN"), as_json: bool = JSON) -> None:
    from dstack.service.runs import record_of

    data = record_of(open_session(), run_name).to_dict()
    if as_json:
        print_json(data)
        return
    import yaml

    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=78))


def workflows(as_json: bool = JSON) -> None:
    from dstack.spec.files import find_repo_root
    from dstack.spec.loader import Project

    project = Project.load(find_repo_root(Path.cwd()))
    rows = []
    for name, raw in project.raw.items():
        rows.append(
            {
                "name": name,
                "provider": raw.data.get("provider", "bash"),
                "help": raw.data.get("help") or "",
                "file": raw.file,
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        sys.stderr.write("No workflows in .dstack/ yet.\n")
        return
    table(
        ["WORKFLOW", "PROVIDER", "HELP"],
        [[r["name"], r["provider"], r["help"]] for r in rows],
        shrink=("HELP",),
    )


def schema() -> None:
    import json

    from dstack.spec.schema import workflows_schema

    sys.stdout.write(json.dumps(workflows_schema(), indent=2) + "\n")
