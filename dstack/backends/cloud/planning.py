"""The cloud hosts shown before anything exists: each job's stack previewed by the Pulumi engine
(or, without it, the same program offline under the SDK's mock runtime) for `dstack plan`;
recorded first, then previewed by the engine, for a new run's review (so whatever follows is
undone from that record); and written as a standalone Pulumi project for `dstack plan --export`.

`dstack plan` builds each host as `dstack run` would, but for a run not yet named ("RUN") and
with a stand-in key; the caller's address is looked up the same way (access.caller_cidr)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.backends.base import Notes
from dstack.backends.cloud.hosts import DEADLINE_MINUTES
from dstack.backends.plans import (
    HostPlan,
    OfferSummary,
    PlacedJob,
    PlannedResource,
    Previewed,
    SSHRule,
)

if TYPE_CHECKING:
    from dstack.backends.cloud.limits import CloudLimits
    from dstack.home import Home
    from dstack.state.db import State
    from dstack.storage.store import Store
    from stacks.spec import HostSpec


def host_plan(job: PlacedJob, resources: list[PlannedResource], ssh: SSHRule) -> HostPlan:
    """What a job's host is shown as; the host powers itself off at the deadline."""
    return HostPlan(job.spec.name, job.offer, resources, ssh, DEADLINE_MINUTES)


def ssh_rule(limits: CloudLimits, cidr: str | None, problem: str | None = None) -> SSHRule:
    from dstack.backends.cloud.access import cidr_source

    return SSHRule(cidr, cidr_source(limits), problem)


def ssh_from(limits: CloudLimits) -> tuple[str, SSHRule]:
    """Who the host's SSH rule will admit, found as `dstack run` finds it: the range for the
    host spec, and what the plan says about it. When this machine's public address cannot be
    looked up now, the spec gets the preview's stand-in and the plan says so, rather than
    show a range the stack would not get."""
    from dstack.backends.cloud.access import caller_cidr
    from dstack.backends.cloud.preview import CALLER
    from dstack.errors import CloudError

    try:
        cidr = caller_cidr(limits)
    except CloudError as e:
        return CALLER, ssh_rule(limits, None, e.message)
    return cidr, ssh_rule(limits, cidr)


def planned_spec(job: PlacedJob, limits: CloudLimits, allowed_cidr: str) -> HostSpec:
    """The job's host as `dstack plan` shows it: no run yet, the preview's stand-in key."""
    from dstack.backends.cloud.hosts import host_spec
    from dstack.backends.cloud.preview import PREVIEW_KEY
    from dstack.tags import who

    spec, offer = job.spec, job.offer
    return host_spec(
        offer,
        "RUN",
        spec.name,
        who(),
        spec.resources,
        limits,
        allowed_cidr=allowed_cidr,
        ssh_public_key=PREVIEW_KEY,
    )


# dstack plan --------------------------------------------------------------------------------


def plan_hosts(home: Home, jobs: list[PlacedJob], limits: CloudLimits, offline: bool) -> Previewed:
    """Each job's host, previewed by the engine until it is missing or fails, then offline."""
    hosts, problem = [], None
    for job in jobs:
        cidr, ssh = ssh_from(limits)
        resources, offline, why = _preview(home, planned_spec(job, limits, cidr), offline)
        problem = problem or why
        hosts.append(host_plan(job, resources, ssh))
    return Previewed(hosts, offline, problem)


def _preview(
    home: Home, host: HostSpec, offline: bool
) -> tuple[list[PlannedResource], bool, str | None]:
    """The engine's preview when the `pulumi` CLI is there and it works (credentials), else
    the same program under the SDK's mock runtime; whether offline, and why the engine failed."""
    import shutil

    from dstack.backends.cloud.preview import PLACEHOLDERS, offline_preview
    from dstack.errors import CloudError

    problem = None
    if not offline and shutil.which("pulumi"):
        from dstack.backends.cloud.automation import engine_preview

        try:
            return engine_preview(home, host, PLACEHOLDERS), False, None
        except CloudError as e:
            problem = e.message
    return offline_preview(host), True, problem


def export_hosts(
    jobs: list[PlacedJob],
    limits: CloudLimits,
    folder: Path,
    allowed_cidr: str,
    ssh_public_key: str,
    notes: Notes,
) -> None:
    """The jobs' hosts, as `dstack plan` shows them, written as a Pulumi project."""
    from dstack.backends.cloud.export import export_planned

    hosts = [planned_spec(job, limits, ssh_from(limits)[0]) for job in jobs]
    export_planned(folder, hosts, allowed_cidr, ssh_public_key, notes)


# a new run's review ---------------------------------------------------------------------------


def reserve_hosts(
    home: Home,
    state: State,
    run: str,
    jobs: list[PlacedJob],
    limits: CloudLimits,
    notes: Notes,
    store: Store | None = None,
) -> list[HostPlan]:
    """Record each job's stack, then preview it with the engine, for the run's review."""
    specs = record_stacks(home, state, run, jobs, limits, store)
    previews = preview_stacks(home, specs, notes)
    return [
        host_plan(job, resources, ssh_rule(limits, spec.allowed_cidr))
        for job, spec, resources in zip(jobs, specs, previews, strict=True)
    ]


def record_stacks(
    home: Home,
    state: State,
    run: str,
    jobs: list[PlacedJob],
    limits: CloudLimits,
    store: Store | None = None,
) -> list[HostSpec]:
    """Each job's stack in SQLite first (so no later failure can hide it), then, where the
    store is shared, in the store for the other homes (dstack.backends.cloud.team), then in
    Pulumi's state; the caller's address and the run's key are filled in here."""
    import time

    from dstack.backends.cloud import team
    from dstack.backends.cloud.access import caller_cidr, run_key
    from dstack.backends.cloud.automation import open_stack
    from dstack.backends.cloud.hosts import host_spec
    from dstack.backends.cloud.ledger import Ledger
    from dstack.backends.cloud.workspace import shared_store, state_backend
    from dstack.storage.store import Store
    from dstack.tags import who

    _, public_key = run_key(home, run)
    shared = shared_store(home)
    if shared:
        store = store or Store.open(home)
    backend = state_backend(home, store)
    specs = []
    for job in jobs:
        spec = host_spec(
            job.offer,
            run,
            job.spec.name,
            who(),
            job.spec.resources,
            limits,
            allowed_cidr=caller_cidr(limits),
            ssh_public_key=public_key,
        )
        offer = asdict(OfferSummary.of(job.offer))
        Ledger(state).record(spec.name, run, job.spec.name, asdict(spec), offer)
        if shared and store is not None:
            mine = team.TeamStack(
                spec.name, run, job.spec.name, spec.backend, home.id, who(), time.time()
            )
            team.publish(store, mine)
        open_stack(home, spec, backend=backend)
        specs.append(spec)
    return specs


def preview_stacks(home: Home, specs: list[HostSpec], notes: Notes) -> list[list[PlannedResource]]:
    """The engine's preview of each recorded stack (installing a missing plug-in first)."""
    from dstack.backends.cloud.automation import ensure_plugin, open_stack, preview

    previews = []
    for spec in specs:
        stack = open_stack(home, spec)
        ensure_plugin(stack, spec.backend, notes)
        previews.append(preview(stack, {spec.ssh_public_key: "<this run's key>"}))
    return previews
