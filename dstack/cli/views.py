"""Looking at runs: ps, logs, attach, stop, rm, inspect, workflows, schema."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dstack.cli.common import age, duration, open_state, print_json, table

if TYPE_CHECKING:
    from dstack.home import Home
    from dstack.sharing import SharedRun
    from dstack.state.db import State
    from dstack.storage.store import Store

log = logging.getLogger(__name__)
JSON = typer.Option(False, "--json", help="Print JSON instead of a table")


def register(app: typer.Typer) -> None:
    app.command(help="List runs: active ones and the latest finished (-a: all).")(ps)
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
    from dstack.backends.ledger import Ledger
    from dstack.runner.recover import recover
    from dstack.sharing import SharedRun
    from dstack.storage.store import Store
    from dstack.tags import who

    home, state = open_state()
    store = Store.open(home)
    recover(home, state, store)
    me = who()
    runs = [
        SharedRun(
            r.name, r.workflow, r.status, r.created_at, r.finished_at, r.exit_code, r.tag, me, {}
        )
        for r in state.runs(include_finished=all_runs)
    ]
    runs = _recent(runs + _teammates_runs(home, state, store), all_runs)
    if as_json:
        print_json([{k: v for k, v in r.to_dict().items() if k != "manifests"} for r in runs])
        return
    if not runs:
        sys.stderr.write("No runs yet. Start one with `dstack run WORKFLOW`.\n")
        return
    table(
        ["RUN", "WORKFLOW", "STATUS", "SUBMITTED", "TOOK", "TAG"],
        [
            [
                r.name + ("" if r.owner == me else f" ({r.owner.partition('@')[0]})"),
                r.workflow,
                r.status + (f" ({r.exit_code})" if r.exit_code else ""),
                age(r.created_at),
                duration(r.created_at, r.finished_at),
                r.tag or "",
            ]
            for r in runs
        ],
        shrink=("WORKFLOW", "TAG"),
    )
    left = len(Ledger(state).left_behind())
    if left:
        sys.stderr.write(
            f"{left} cloud stack{'s' if left > 1 else ''} of ended runs may still cost money: "
            "see `dstack gc --dry-run`.\n"
        )


def _teammates_runs(home: Home, state: State, store: Store) -> list[SharedRun]:
    """The store's runs of other homes; an unreachable store costs one warning, not the list."""
    from dstack.errors import StoreError
    from dstack.sharing import shared_runs

    try:
        return shared_runs(home, state, store)
    except StoreError as e:
        log.warning("%s; showing this home's runs only.", e.message.rstrip("."))
        return []


def _recent(runs: list[SharedRun], all_runs: bool, recent: int = 10) -> list[SharedRun]:
    """Newest first: every active run and the ``recent`` latest (all with ``all_runs``)."""
    runs.sort(key=lambda r: r.created_at, reverse=True)
    if all_runs:
        return runs
    latest = {r.name for r in runs[:recent]}
    return [r for r in runs if not r.finished or r.name in latest]


def logs(
    run_name: str = typer.Argument(..., metavar="RUN"),
    follow_: bool = typer.Option(False, "-f", "--follow", help="Keep following until the run ends"),
    timestamps: bool = typer.Option(False, "--timestamps", help="Show when each line was written"),
    workflow: str | None = typer.Option(None, "-w", "--workflow", help="Only this job's log"),
) -> None:
    from dstack.runner.follow import follow

    home, state = open_state()
    _local_run(home, state, run_name)
    try:
        follow(home, state, run_name, sys.stdout, follow_, timestamps, workflow)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _local_run(home: Home, state: State, run_name: str) -> None:
    """Logs live with the home that ran the job: a teammate's run gets a clear refusal."""
    from dstack.errors import NotFoundError

    if state.has_run(run_name):
        return
    from dstack.sharing import find_run
    from dstack.storage.store import Store

    shared = find_run(state, Store.open(home), run_name)
    raise NotFoundError(
        f"Run {run_name} is {shared.owner}'s: its logs are on their machine.",
        hint=f"its artifacts are here: dstack artifacts list {run_name}",
    )


def attach(run_name: str = typer.Argument(..., metavar="RUN")) -> None:
    from dstack.runner.follow import follow
    from dstack.runner.ports import open_for_job
    from dstack.ssh.forward import Forwards

    home, state = open_state()
    _local_run(home, state, run_name)
    forwards = Forwards()
    try:
        code = follow(
            home,
            state,
            run_name,
            sys.stdout,
            keep_following=True,
            on_running=lambda job: open_for_job(home, state, job, forwards, sys.stderr),
        )
    except KeyboardInterrupt:
        sys.stderr.write(f"\nDetached; {run_name} goes on. Stop it with: dstack stop {run_name}\n")
        raise typer.Exit(130) from None
    finally:
        forwards.close()
    final = state.run(run_name)
    sys.stderr.write(f"Run {run_name} {final.status}\n")
    raise typer.Exit(code or 0)


def stop(
    run_name: str = typer.Argument(..., metavar="RUN"),
    abort: bool = typer.Option(False, "-x", "--abort", help="Kill at once, no grace period"),
) -> None:
    from dstack.execution import procs
    from dstack.execution.factory import executor_of_job
    from dstack.runner.recover import recover
    from dstack.storage.store import Store

    home, state = open_state()
    run = state.run(run_name)
    if run.finished:
        sys.stderr.write(f"Run {run_name} is already {run.status}.\n")
        return
    state.update_run(run_name, stop_request="abort" if abort else "stop")
    deadline = time.monotonic() + 30
    while procs.alive(run.supervisor_pid, run.supervisor_start) and time.monotonic() < deadline:
        time.sleep(0.1)
        if state.run(run_name).finished:
            break
    if not state.run(run_name).finished:  # no supervisor left: stop the jobs ourselves
        store = Store.open(home)
        for job in state.jobs(run_name):
            if job.status == "running" and job.pid and job.job_dir:
                executor = executor_of_job(home, store, state, job.record)
                try:
                    executor.adopt(job.job_dir, job.pid, job.pid_start).stop(abort=abort)
                finally:
                    executor.close()
        recover(home, state)
    sys.stderr.write(f"Run {run_name} {state.run(run_name).status}.\n")


def rm(
    run_name: str = typer.Argument(..., metavar="RUN"),
    force: bool = typer.Option(
        False, "--force", help="Remove even a tagged run's record (tagged artifacts stay reachable)"
    ),
) -> None:
    import shutil

    from dstack.errors import RunStateError
    from dstack.runner.recover import recover
    from dstack.sharing import open_tags
    from dstack.storage.store import Store

    home, state = open_state()
    recover(home, state)
    run = state.run(run_name)
    if not run.finished:
        raise RunStateError(
            f"Run {run_name} is {run.status}.", hint=f"stop it first: dstack stop {run_name}"
        )
    store = Store.open(home)
    book = open_tags(state, store)
    tagged = book.of_run(run_name)
    if tagged and not force:
        raise RunStateError(
            f"Run {run_name} is tagged as {', '.join(repr(t) for t in tagged)}.",
            hint="delete the tag first (dstack tags delete TAG), or pass --force to "
            "remove the run record and keep the tagged artifacts",
        )
    referenced = book.referenced_manifests() | state.manifests_used_outside(run_name)
    for job in state.jobs(run_name):
        if job.manifest and job.manifest not in referenced and not job.reused_from:
            store.delete_manifest(job.manifest)
    if not tagged:
        store.delete_run(run_name)
    state.delete_run(run_name)
    shutil.rmtree(home.runs_dir / run_name, ignore_errors=True)
    sys.stderr.write(
        f"Removed run {run_name}" + (" (tagged artifacts kept)" if tagged else "") + ".\n"
    )


def inspect(run_name: str = typer.Argument(..., metavar="RUN"), as_json: bool = JSON) -> None:
    from dstack.runner.recover import recover

    home, state = open_state()
    recover(home, state)
    run = state.run(run_name)
    jobs = state.jobs(run_name)
    data = {
        "run": run.name,
        "workflow": run.workflow,
        "status": run.status,
        "exit_code": run.exit_code,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "repo": run.repo_dir,
        "code": {
            k: run.snapshot.get(k) for k in ("commit", "branch", "dirty_hash", "digest", "files")
        },
        "args": run.args,
        "variables": run.variables,
        "tag": run.tag,
        "jobs": [
            {
                "workflow": j.workflow,
                "status": j.status,
                "exit_code": j.exit_code,
                "error": j.error,
                "reused_from": j.reused_from,
                "upstream": j.upstream,
                "provider": j.spec.get("provider"),
                "backend": j.record.get("backend"),
                "host": j.record.get("host"),
                "inputs": j.record.get("inputs", []),
                "artifacts": j.manifest,
                "spec": j.spec,
            }
            for j in jobs
        ],
    }
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
