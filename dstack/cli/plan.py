"""`dstack plan WORKFLOW`: where each job would run, what it costs, and every resource its
stack would create, before anything exists."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from dstack.cli.common import print_json
from dstack.cli.runargs import WorkflowCommand, workflow_tokens


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
    from dstack.backends.hosts import host_spec
    from dstack.backends.offers import OWN, check_backend
    from dstack.backends.preview import PREVIEW_KEY
    from dstack.cli.common import open_state
    from dstack.config import cloud_limits
    from dstack.runner.clouds import offer_choices
    from dstack.runner.plan import plan_run
    from dstack.spec.files import find_repo_root
    from dstack.tags import who

    repo = find_repo_root(Path.cwd())
    tokens = workflow_tokens(ctx, repo)
    home, state = open_state()
    check_backend(backend, home)
    planned = plan_run(home.root / "cache" / "plans", repo, workflow, tokens)
    limits = cloud_limits(home)
    choices = offer_choices(home, state, [j.spec for j in planned.jobs], {"backend": backend})
    report: list[dict[str, Any]] = []
    hosts = []
    source = "engine"  # until the engine is missing or fails: then offline for every job
    for spec, offer in choices:
        if offer.backend in OWN:
            report.append(report_entry(spec.name, offer, None))
            continue
        cidr, ssh = ssh_from(limits[offer.backend])
        host = host_spec(
            offer,
            "RUN",
            spec.name,
            who(),
            spec.resources,
            limits[offer.backend],
            allowed_cidr=cidr,
            ssh_public_key=PREVIEW_KEY,
        )
        hosts.append(host)
        resources, source = _preview(home, host, source)
        report.append(report_entry(spec.name, offer, resources, ssh))
    if export_dir is not None:
        _export(export_dir, hosts, allowed_cidr, ssh_key)
    if as_json:
        print_json({"workflow": workflow, "preview": source, "jobs": report})
        return
    label = "preview by the Pulumi engine" if source == "engine" else "offline preview"
    print_report(f"Plan for '{workflow}' ({label}: nothing is created).", report)


def _preview(home: Any, host: Any, source: str) -> tuple[list[Any], str]:
    """The engine's preview when the `pulumi` CLI is there and it works (credentials), else
    the same program under the SDK's mock runtime; ``source`` says which, once per plan."""
    import shutil

    from dstack.backends.preview import PLACEHOLDERS, offline_preview
    from dstack.errors import CloudError

    if source == "engine" and shutil.which("pulumi"):
        from dstack.backends.automation import engine_preview

        try:
            return engine_preview(home, host, PLACEHOLDERS), "engine"
        except CloudError as e:
            sys.stderr.write(
                f"The engine's preview failed, so this is the offline one: {e.message}\n"
            )
    return offline_preview(host), "offline"


def ssh_from(limits: Any) -> tuple[str, dict[str, Any]]:
    """Who the host's SSH rule will admit, found as `dstack run` finds it (the one function,
    access.caller_cidr): the range for the host spec, and what the report says about it.
    When this machine's public address cannot be looked up now, the spec gets the preview's
    stand-in and the report says so, rather than show a range the stack would not get."""
    from dstack.backends.access import caller_cidr
    from dstack.backends.preview import CALLER
    from dstack.errors import CloudError

    try:
        cidr = caller_cidr(limits)
    except CloudError as e:
        return CALLER, ssh_report(limits, None, e.message)
    return cidr, ssh_report(limits, cidr)


def ssh_report(limits: Any, cidr: str | None, problem: str | None = None) -> dict[str, Any]:
    """What a plan or a review says about a host's SSH rule (``cidr`` None: not known now)."""
    from dstack.backends.access import cidr_source

    return {"cidr": cidr, "source": cidr_source(limits), "problem": problem}


def report_entry(
    job: str, offer: Any, resources: list[Any] | None, ssh: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One job of a plan: its offer, and for a cloud host the cost cap, who may reach its SSH
    (``ssh``, from ssh_from) and every resource."""
    from dstack.backends.hosts import DEADLINE_MINUTES
    from dstack.runner.clouds import offer_json

    entry: dict[str, Any] = {"job": job, "offer": offer_json(offer)}
    entry["resources"] = [r.__dict__ for r in resources or []]
    if resources is not None:
        entry["cost_cap"] = round(offer.price * DEADLINE_MINUTES / 60, 2)
        entry["ssh_from"] = ssh
    return entry


def _export(folder: Path, hosts: list[Any], allowed_cidr: str, ssh_key: Path | None) -> None:
    from dataclasses import replace

    from dstack.backends.export import export
    from dstack.backends.preview import CALLER, PREVIEW_KEY
    from dstack.errors import SpecError

    if not hosts:
        raise SpecError(
            "Nothing to export: every job runs on this machine or the pool.",
            hint="--export writes the cloud hosts of a plan (see `dstack offers`)",
        )
    key = ""
    if ssh_key is not None:
        try:
            key = ssh_key.expanduser().read_text().strip()
        except OSError as e:
            raise SpecError(f"Cannot read the SSH key {ssh_key}: {e.strerror}.") from None
    if allowed_cidr:
        try:
            hosts = [replace(h, allowed_cidr=allowed_cidr) for h in hosts]  # validated here
        except ValueError as e:
            raise SpecError(f"--allowed-cidr: {e}.", hint="e.g. 203.0.113.7/32") from None
    written = export(folder, hosts, {CALLER: "", PREVIEW_KEY: key})
    notes = [f"Wrote {folder}/Pulumi.yaml and " + ", ".join(p.name for p in written) + "."]
    has_cidr = bool(allowed_cidr) or all(h.allowed_cidr != CALLER for h in hosts)
    if not has_cidr or not key:
        notes.append(
            "Before `pulumi up`, set what dstack fills in at launch: "
            + " and ".join(
                f"pulumi config set --path host.{field} VALUE"
                for field, given in (("allowed_cidr", has_cidr), ("ssh_public_key", key))
                if not given
            )
            + " (or pass --allowed-cidr / --ssh-key)."
        )
    sys.stderr.write("\n".join(notes) + "\n")


def print_report(title: str, report: list[dict[str, Any]], out_file: Any = None) -> None:
    """The plan as text, 80 columns: per job where, what, the price, and each resource."""
    from dstack.backends.hosts import DEADLINE_MINUTES

    out = [title]
    for entry in report:
        o = entry["offer"]
        where = f"{o['backend']} {o['name']}" + (f" in {o['region']}" if o["region"] else "")
        what = ", ".join(x for x in (o["gpus"], "spot" if o["spot"] else "") if x)
        price = f"${o['price']:g}/h"
        if "cost_cap" in entry:
            price += f"; at most ${entry['cost_cap']:g} by the host's {DEADLINE_MINUTES // 60} h deadline"
        out.append(f"\n{entry['job']}: {where}" + (f", {what}" if what else ""))
        out.append(f"  {price}")
        if entry.get("ssh_from"):
            out.extend(_ssh_lines(entry["ssh_from"]))
        if not entry["resources"]:
            out.append("  nothing to create")
        for resource in entry["resources"]:
            out.append(f"  + {resource['type']}  {resource['name']}")
            for label, value in resource["inputs"].items():
                out.append(f"      {label}: {value}")
    (out_file or sys.stdout).write("\n".join(out) + "\n")


def _ssh_lines(ssh: dict[str, Any]) -> list[str]:
    import textwrap

    if ssh["cidr"]:
        text = f"SSH open to {ssh['cidr']} only ({ssh['source']})"
    else:
        text = (
            f"SSH open to: not known now. {ssh['problem']} `dstack run` looks again and stops "
            "if it still cannot; allowed_cidr in config.yaml sets the range instead."
        )
    return textwrap.wrap(text, 80, initial_indent="  ", subsequent_indent="    ")
