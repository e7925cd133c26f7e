"""Taking a host for a job when it starts: the offers submission placed it on, tried in
order through their backends. A job waits while every offer is busy (or its host is being
created) and fails when none answers; nothing is placed again here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dstack.backends.base import Backend, Unavailable, Waiting
from dstack.errors import ResourceError
from dstack.execution.base import Executor
from dstack.offer import Offer
from dstack.runner.placement import place_jobs
from dstack.state.db import State
from dstack.state.records import JobRecord, RunRecord


@dataclass(frozen=True)
class Placed:
    """A job's host, taken from one of its offers: the executor there, and its backend."""

    executor: Executor
    backend: Backend


class HostTaker:
    def __init__(
        self, backends: Mapping[str, Backend], state: State, note: Callable[[str], None]
    ) -> None:
        self.backends, self.state, self.note = backends, state, note

    def take(self, run: RunRecord, job: JobRecord) -> Placed | None:
        """The first offer that can be taken now, with its backend; None while the job
        waits (all busy, its host being created)."""
        waiting: list[Waiting] = []
        down: list[Unavailable] = []
        for offer in self.placement(run, job):
            backend = self.backends[offer.backend]
            got = backend.acquire(job, offer)
            if isinstance(got, Waiting):
                waiting.append(got)
            elif isinstance(got, Unavailable):
                down.append(got)
            else:
                return Placed(got, backend)
        if not waiting:
            raise ResourceError(
                f"No host that fits workflow '{job.workflow}' answers: "
                + ", ".join(d.name for d in down),
                hint="see `dstack pool list`; start the host again, or remove it from the pool",
            )
        what = waiting[0].what
        whys = [w.why.removesuffix(" busy") for w in waiting if w.what == what and w.why]
        busy = all(w.why and w.why.endswith(" busy") for w in waiting if w.what == what)
        why = (", ".join(whys) + " busy") if busy and whys else (whys[0] if whys else None)
        self.wait(run, job, what, why)
        return None

    def placement(self, run: RunRecord, job: JobRecord) -> list[Offer]:
        """Where submission placed the job (a job recorded before placements were kept is
        placed now, once)."""
        if job.placement:
            return list(job.placement)
        return place_jobs([job.job_spec], self.backends, run.placement)[job.workflow]

    def holders(self, job: JobRecord) -> list[Backend]:
        """The backends a job that failed to start may hold something of (a claimed slot,
        a recorded stack)."""
        names = {o.backend for o in job.placement} or set(self.backends)
        return [self.backends[name] for name in names]

    def wait(self, run: RunRecord, job: JobRecord, what: str, why: str | None) -> None:
        """Mark the job waiting for ``what`` (or fail it under --no-wait); ``why`` None: a
        wait that needs no note (a host being created says so itself)."""
        if why is None:
            if job.status != "waiting" or job.error != f"waiting for {what}":
                self.state.update_job(
                    run.name, job.workflow, status="waiting", error=f"waiting for {what}"
                )
            return
        if run.placement.no_wait:
            raise ResourceError(f"{why}, and --no-wait was given")
        if job.status != "waiting":
            self.state.update_job(
                run.name, job.workflow, status="waiting", error=f"waiting for {what}: {why}"
            )
            self.note(f"{job.workflow} is waiting for {what} ({why})")
