"""`dstack plan WORKFLOW`: where each job would run, what it costs, and every resource of the
host created for it, before anything exists. Also the text of a run's review of its hosts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import typer

from dstack.cli.common import print_json
from dstack.cli.runargs import WorkflowCommand, workflow_tokens

if TYPE_CHECKING:
    from dstack.backends.plans import SSHRule
    from dstack.service.plan import JobPlan

WIDTH = 80


def register(app: typer.Typer) -> None:
    app.command(
        help="Show where each job would run (the cheapest allowed offer), its price, and every "
        "resource of its stack; nothing is created.",
        cls=WorkflowCommand,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(plan)


def plan(
    ctx: typer.Context,
    workflow: str = typer.Argument(..., help="Workflow name from .dstack/"),
    backend: str | None = typer.Option(None, "--backend", help="Only this backend"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text"),
    export_dir: Path | None = typer.Option(
        None, "--export", metavar="DIR", help="Also write the cloud hosts as a Pulumi project"
    ),
    allowed_cidr: str = typer.Option(
        "", "--allowed-cidr", help="With --export: who may reach SSH (e.g. your address/32)"
    ),
    ssh_key: Path | None = typer.Option(
        None, "--ssh-key", help="With --export: the public key to install on the hosts"
    ),
) -> None:
    from dstack.cli.common import open_session
    from dstack.service.plan import ENGINE, export_hosts
    from dstack.service.plan import plan as make_plan
    from dstack.spec.files import find_repo_root

    repo = find_repo_root(Path.cwd())
    tokens = workflow_tokens(ctx, repo)
    session = open_session()
    report = make_plan(session, workflow, repo, tokens, backend)
    if report.engine_problem:
        sys.stderr.write(
            f"The engine's preview failed, so this is the offline one: {report.engine_problem}\n"
        )
    if export_dir is not None:
        export_hosts(session, report, export_dir, allowed_cidr, ssh_key, _line)
    if as_json:
        print_json(report.to_dict())
        return
    label = "preview by the Pulumi engine" if report.preview == ENGINE else "offline preview"
    print_report(f"Plan for '{workflow}' ({label}: nothing is created).", report.jobs)


def _line(text: str) -> None:
    sys.stderr.write(text + "\n")


def print_report(title: str, jobs: list[JobPlan], out_file: TextIO | None = None) -> None:
    """The plan as text, 80 columns: per job where, what, the price, and each resource."""
    out = [title]
    for entry in jobs:
        o = entry.offer
        where = f"{o.backend} {o.name}" + (f" in {o.region}" if o.region else "")
        what = ", ".join(x for x in (o.gpus, "spot" if o.spot else "") if x)
        price = f"${o.price:g}/h"
        if entry.cost_cap is not None and entry.deadline_minutes is not None:
            hours = entry.deadline_minutes // 60
            price += f"; at most ${entry.cost_cap:g} by the host's {hours} h deadline"
        out.append(f"\n{entry.job}: {where}" + (f", {what}" if what else ""))
        out.append(f"  {price}")
        if entry.ssh_from is not None:
            out.extend(_ssh_lines(entry.ssh_from))
        if not entry.resources:
            out.append("  nothing to create")
        for resource in entry.resources or []:
            out.append(f"  + {resource.type}  {resource.name}")
            for label, value in resource.inputs.items():
                out.append(f"      {label}: {value}")
    (out_file or sys.stdout).write("\n".join(out) + "\n")


def _ssh_lines(ssh: SSHRule) -> list[str]:
    import textwrap

    if ssh.cidr:
        text = f"SSH open to {ssh.cidr} only ({ssh.source})"
    else:
        text = (
            f"SSH open to: not known now. {ssh.problem} `dstack run` looks again and stops "
            "if it still cannot; allowed_cidr in config.yaml sets the range instead."
        )
    return textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="    ")
