"""`plan`: where each job of a run would go (its cheapest allowed offer), what that costs, and
every resource of the host a backend would create for it, before anything exists. The same
rows show a new run's hosts for review (dstack.service.review).

What a backend would create is its own business (`Backend.plan`, `Backend.export`): this
module only groups the jobs by backend, asks each one, and puts the answers in job order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.backends.base import Notes
from dstack.backends.plans import HostPlan, OfferSummary, PlacedJob, PlannedResource, SSHRule

if TYPE_CHECKING:
    from dstack.offer import Offer
    from dstack.service.session import Session

# How the hosts were previewed: by their backends' engines, or (one was missing or failed)
# offline, without one.
ENGINE, OFFLINE = "engine", "offline"


@dataclass(frozen=True)
class JobPlan:
    """One job of a plan as shown: its offer, and for a host to create its cost cap (the
    price until the deadline it powers itself off at), its SSH rule and every resource its
    creation makes (``resources`` None: nothing is created, e.g. own hardware)."""

    job: str
    offer: OfferSummary
    resources: list[PlannedResource] | None = None
    cost_cap: float | None = None
    ssh_from: SSHRule | None = None
    deadline_minutes: int | None = None

    @classmethod
    def of_offer(cls, job: str, offer: Offer) -> JobPlan:
        """A job that gets no host created."""
        return cls(job, OfferSummary.of(offer))

    @classmethod
    def of_host(cls, host: HostPlan) -> JobPlan:
        offer = OfferSummary.of(host.offer)
        resources = list(host.resources)
        return cls(host.job, offer, resources, host.cost_cap, host.ssh_from, host.deadline_minutes)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"job": self.job, "offer": asdict(self.offer)}
        entry["resources"] = [asdict(r) for r in self.resources or []]
        if self.resources is not None:
            entry["cost_cap"] = self.cost_cap
            entry["ssh_from"] = None if self.ssh_from is None else asdict(self.ssh_from)
        return entry


@dataclass(frozen=True)
class PlanReport:
    """``preview``: ENGINE or OFFLINE; ``engine_problem`` says why an engine's preview failed,
    when one did; ``to_create``: the jobs that get a host created (what --export writes)."""

    workflow: str
    preview: str
    jobs: list[JobPlan]
    to_create: list[PlacedJob] = field(default_factory=list)
    engine_problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "preview": self.preview,
            "jobs": [j.to_dict() for j in self.jobs],
        }


def by_backend(jobs: Iterable[PlacedJob]) -> dict[str, list[PlacedJob]]:
    """The jobs placed on each backend, backends in the order their first job comes."""
    groups: dict[str, list[PlacedJob]] = {}
    for job in jobs:
        groups.setdefault(job.offer.backend, []).append(job)
    return groups


def plan(
    session: Session, workflow: str, repo: Path, args: list[str], backend: str | None
) -> PlanReport:
    """The plan of `dstack run WORKFLOW ARGS` (``args``: the words after the workflow name)."""
    from dstack.backends.base import Context
    from dstack.backends.registry import check_backend, open_all
    from dstack.offer import Scope
    from dstack.runner.placement import place_jobs
    from dstack.runner.plan import plan_run

    home = session.home
    ctx = Context(home, session.state)
    check_backend(backend, ctx)
    planned = plan_run(home.root / "cache" / "plans", repo, workflow, args)
    backends = open_all(ctx)
    specs = [j.spec for j in planned.jobs]
    placements = place_jobs(specs, backends, Scope(backend=backend))
    chosen = [PlacedJob(spec, placements[spec.name][0]) for spec in specs]
    hosts: dict[str, HostPlan] = {}
    offline, problem = False, None  # once an engine is missing or fails: offline for the rest
    for name, jobs in by_backend(j for j in chosen if not j.offer.own).items():
        previewed = backends[name].plan(jobs, offline)
        hosts |= {host.job: host for host in previewed.hosts}
        offline, problem = offline or previewed.offline, problem or previewed.problem
    rows = [
        JobPlan.of_host(hosts[j.spec.name])
        if j.spec.name in hosts
        else JobPlan.of_offer(j.spec.name, j.offer)
        for j in chosen
    ]
    to_create = [j for j in chosen if j.spec.name in hosts]
    return PlanReport(workflow, OFFLINE if offline else ENGINE, rows, to_create, problem)


def export_hosts(
    session: Session,
    report: PlanReport,
    folder: Path,
    allowed_cidr: str,
    ssh_key: Path | None,
    notes: Notes,
) -> None:
    """Write the plan's hosts into ``folder`` as the project each backend's own tool creates
    them from (for the Pulumi clouds: a Pulumi project), saying what is left to fill in."""
    from dstack.backends.base import Context
    from dstack.backends.registry import open_backend
    from dstack.errors import SpecError

    if not report.to_create:
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
    ctx = Context(session.home, session.state, notes=notes)
    for name, jobs in by_backend(report.to_create).items():
        open_backend(name, ctx).export(jobs, folder, allowed_cidr, key)
