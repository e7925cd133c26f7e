"""Submitting a run: everything that can be refused is refused before the run exists, cloud
hosts are confirmed by the caller (dstack.service.review), then the run is recorded; it starts
with dstack.service.start. `rerun` records a finished run's snapshot and jobs again."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.offer import Scope

if TYPE_CHECKING:
    from dstack.backends.base import Notes
    from dstack.service.review import Confirm
    from dstack.service.session import Session


@dataclass(frozen=True)
class RunRequest:
    """What `dstack run WORKFLOW ARGS` asks for. ``args`` are the words after the workflow
    name: `--NAME VALUE` sets a declared variable, the others become ${{ run.args }}, and
    everything after `--` goes to ${{ run.args }} untouched."""

    workflow: str
    repo: Path
    args: list[str] = field(default_factory=list)
    tag: str | None = None  # given to the run when it succeeds
    scope: Scope = field(default_factory=Scope)
    detached: bool = False


@dataclass(frozen=True)
class Submitted:
    """A recorded run, not started yet: its name, its jobs in the order they run, and the
    digest of its code snapshot."""

    name: str
    jobs: list[str]
    snapshot: str


def submit(session: Session, request: RunRequest, confirm: Confirm, notes: Notes) -> Submitted:
    """Plan, check and snapshot the run, then record it (its cloud hosts confirmed first)."""
    from dstack.backends.registry import check_backend
    from dstack.runner.launch import prepare, record
    from dstack.service.review import create_reviewed

    store = session.store
    check_backend(request.scope.backend, session.context())
    sub = prepare(
        session.home,
        session.state,
        store,
        request.repo,
        request.workflow,
        request.args,
        request.tag,
        request.scope,
    )
    name = create_reviewed(
        session,
        sub.jobs,
        lambda: record(session.state, store, sub, request.tag, request.detached),
        confirm,
        notes,
    )
    return Submitted(name, [j.workflow for j in sub.jobs], sub.snapshot.digest)


def resubmit(
    session: Session, run_name: str, detached: bool, confirm: Confirm, notes: Notes
) -> Submitted:
    """A new run of ``run_name``'s recorded code snapshot, workflow spec and arguments."""
    from dstack.runner.placement import decide
    from dstack.service.review import create_reviewed
    from dstack.sharing import claim_run
    from dstack.state.records import NewJob

    state, store = session.state, session.store
    old = state.run(run_name)
    olds = state.jobs(run_name)
    # A new run is placed anew: the pool, the clouds and their limits may have changed.
    placed = decide(session.home, state, [j.job_spec for j in olds], old.placement)
    jobs = [NewJob(j.workflow, j.spec, j.upstream, placed[j.workflow]) for j in olds]

    def create() -> str:
        return state.create_run(
            workflow=old.workflow,
            repo_dir=old.repo_dir,
            args=old.args,
            variables=old.variables,
            tag=None,
            snapshot=old.snapshot,
            jobs=jobs,
            detached=detached,
            placement=old.placement,
            claim=partial(claim_run, state, store),
        )

    name = create_reviewed(session, jobs, create, confirm, notes)
    return Submitted(name, [j.workflow for j in jobs], str(old.snapshot["digest"]))
