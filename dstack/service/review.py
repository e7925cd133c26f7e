"""Creating a run whose jobs need hosts created for them (cloud VMs): the backends reserve the
hosts (recorded, then previewed) and they are shown to the caller, who confirms them or not,
before anything is created.

The hosts are recorded before the preview, so whatever happens next (a failed preview, a
"no", Ctrl-C) is undone from that record (`Backend.withdraw`) and nothing is left behind."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dstack.errors import RunStateError

if TYPE_CHECKING:  # a run on own hardware only imports none of the review's parts
    from dstack.backends.base import Backend, Notes
    from dstack.backends.plans import PlacedJob
    from dstack.service.plan import JobPlan
    from dstack.service.session import Session
    from dstack.state.records import NewJob


@dataclass(frozen=True)
class CloudReview:
    """The hosts a new run would create, as their backends preview them."""

    run: str
    hosts: list[JobPlan]


Confirm = Callable[[CloudReview], bool]


class Declined(RunStateError):
    """The caller did not confirm the hosts: the run and what was reserved were withdrawn."""


def create_reviewed(
    session: Session,
    jobs: Sequence[NewJob],
    create: Callable[[], str],
    confirm: Confirm,
    notes: Notes,
) -> str:
    """Create the run with ``create``; when some of its jobs are placed on hosts to create,
    their backends check their tools first and the hosts are confirmed (Declined when they
    are not)."""
    if all(offer.own for job in jobs for offer in job.placement):
        return create()  # own hardware only: nothing more to open or ask
    from dstack.backends.base import Context
    from dstack.backends.plans import PlacedJob
    from dstack.backends.registry import open_backend
    from dstack.service.plan import by_backend
    from dstack.spec.jobspec import JobSpec

    placed = [
        PlacedJob(JobSpec.from_dict(job.spec), job.placement[0])
        for job in jobs
        if len(job.placement) == 1 and not job.placement[0].own
    ]

    ctx = Context(session.home, session.state, notes=notes)
    backends = {name: open_backend(name, ctx) for name in by_backend(placed)}
    for backend in backends.values():
        backend.check_tools()  # before anything is recorded
    name = create()
    _review(session, name, placed, backends, confirm)
    return name


def _review(
    session: Session,
    run: str,
    placed: list[PlacedJob],
    backends: dict[str, Backend],
    confirm: Confirm,
) -> None:
    """Reserve and confirm the run's hosts; the run and its reservations are removed when
    they are declined or anything fails."""
    from dstack.execution import procs
    from dstack.service.plan import JobPlan, by_backend

    # This process holds the run while the caller decides: views must not think it abandoned.
    session.state.update_run(
        run, supervisor_pid=os.getpid(), supervisor_start=procs.start_time(os.getpid())
    )
    order = {job.spec.name: i for i, job in enumerate(placed)}
    try:
        reserved = [
            host
            for name, jobs in by_backend(placed).items()
            for host in backends[name].reserve(run, jobs)
        ]
        hosts = [JobPlan.of_host(h) for h in sorted(reserved, key=lambda h: order[h.job])]
        approved = not hosts or confirm(CloudReview(run, hosts))
    except BaseException:
        _withdraw(session, run, backends.values())
        raise
    if not approved:
        _withdraw(session, run, backends.values())
        raise Declined(f"Run {run} was withdrawn: nothing was created.")


def _withdraw(session: Session, run: str, backends: Iterable[Backend]) -> None:
    """Undo every backend's reservations, then remove the run itself (unless some are left)."""
    withdrawn = [backend.withdraw(run) for backend in backends]  # each one, whatever the others
    if all(withdrawn):
        session.store.delete_run(run)
        session.state.delete_run(run)
