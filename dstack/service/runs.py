"""Reading runs: the listing `ps` shows, one run, its jobs and its reproducibility record."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dstack.sharing import RunInfo as RunInfo  # re-exported: dstack.RunInfo lives by its records

if TYPE_CHECKING:
    from dstack.service.session import Session
    from dstack.state.records import JobRecord

log = logging.getLogger(__name__)
RECENT = 10  # finished runs `ps` shows without -a


@dataclass(frozen=True)
class JobInfo:
    """One job of a run: where it ran and how it ended (``reused_from``: an earlier run's
    up-to-date job stood in for it)."""

    workflow: str
    status: str
    exit_code: int | None
    error: str | None
    backend: str | None
    host: str | None
    started_at: float | None
    finished_at: float | None
    reused_from: str | None
    upstream: list[str]

    @classmethod
    def of(cls, job: JobRecord) -> JobInfo:
        return cls(
            job.workflow,
            job.status,
            job.exit_code,
            job.error,
            job.record.get("backend"),
            job.record.get("host"),
            job.started_at,
            job.finished_at,
            job.reused_from,
            list(job.upstream),
        )


def list_runs(session: Session, all_runs: bool) -> list[RunInfo]:
    """Newest first: every active run and the latest finished ones (all with ``all_runs``),
    this home's and, with a shared store, the teammates' too."""
    from dstack.runner.recover import recover
    from dstack.tags import who

    recover(session.home, session.state, session.store)  # one store for the teammates' runs too
    me = who()
    runs = [
        RunInfo.of(r, me) if r.finished else _with_host(session, RunInfo.of(r, me))
        for r in session.state.runs(include_finished=all_runs)
    ]
    runs += _teammates_runs(session)
    runs.sort(key=lambda r: r.created_at, reverse=True)
    if all_runs:
        return runs
    latest = {r.name for r in runs[:RECENT]}
    return [r for r in runs if not r.finished or r.name in latest]


def _with_host(session: Session, run: RunInfo) -> RunInfo:
    """An active run of this home with the hosts its running jobs are on."""
    from dataclasses import replace

    hosts = [
        str(j.record["host"])
        for j in session.state.jobs(run.name)
        if j.status == "running" and j.record.get("host")
    ]
    return replace(run, host=", ".join(dict.fromkeys(hosts))) if hosts else run


def _teammates_runs(session: Session) -> list[RunInfo]:
    """The store's runs of other homes, the active ones as their jobs' agents show them
    (dstack.service.agent_views); an unreachable store costs one warning, not the list."""
    from dstack.errors import StoreError
    from dstack.sharing import shared_runs

    try:
        found = shared_runs(session.home, session.state, session.store)
    except StoreError as e:
        log.warning("%s; showing this home's runs only.", e.message.rstrip("."))
        return []
    if all(r.finished for r in found):
        return [RunInfo.of(r, r.owner) for r in found]
    from dstack.service.agent_views import live_runs

    live = live_runs(session.store, found)
    return [live.get(r.name) or RunInfo.of(r, r.owner) for r in found]


def get_run(session: Session, name: str) -> RunInfo:
    """One run of this home, or of a teammate's from the store (an active one as its jobs'
    agents show it)."""
    from dstack.sharing import find_run

    session.recover()
    run = find_run(session.state, session.store, name)
    if run.finished or session.state.has_run(name):
        return RunInfo.of(run, run.owner)
    from dstack.service.agent_views import live_run

    return live_run(session.store, run)


def jobs(session: Session, name: str) -> list[JobInfo]:
    """The jobs of one of this home's runs, in the order they were planned."""
    session.recover()
    session.state.run(name)  # a clear error for a name that is not a run
    return [JobInfo.of(j) for j in session.state.jobs(name)]


def require_local(session: Session, name: str) -> None:
    """Attaching (ports forwarded from its hosts) is for the home that started the run: a
    teammate's run gets a clear refusal, and the way to follow its log instead."""
    from dstack.errors import NotFoundError

    if session.state.has_run(name):
        return
    from dstack.sharing import find_run

    shared = find_run(session.state, session.store, name)
    raise NotFoundError(
        f"Run {name} is {shared.owner}'s: only the home that started it can attach to it.",
        hint=f"follow its log: dstack logs {name} -f",
    )


def stacks_left_behind(session: Session) -> int:
    """How many hosts the backends made for ended runs may still cost money (for `ps`)."""
    from dstack.backends.base import Context
    from dstack.backends.registry import leftovers

    return len(leftovers(Context(session.home, session.state, session.store)))


@dataclass(frozen=True)
class JobRecordView:
    """What reproduces one job: its resolved spec, inputs, provider and host."""

    workflow: str
    status: str
    exit_code: int | None
    error: str | None
    reused_from: str | None
    upstream: list[str]
    provider: str | None
    backend: str | None
    host: str | None
    inputs: list[Any]
    artifacts: str | None
    spec: dict[str, Any]


@dataclass(frozen=True)
class RunRecordView:
    """What reproduces a run: its code snapshot, arguments, variables and jobs."""

    run: str
    workflow: str
    status: str
    exit_code: int | None
    created_at: float
    finished_at: float | None
    repo: str
    code: dict[str, Any]
    args: list[str]
    variables: dict[str, Any]
    tag: str | None
    jobs: list[JobRecordView]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_of(session: Session, name: str) -> RunRecordView:
    """The reproducibility record of one of this home's runs (`dstack inspect`)."""
    session.recover()
    run = session.state.run(name)
    return RunRecordView(
        run.name,
        run.workflow,
        run.status,
        run.exit_code,
        run.created_at,
        run.finished_at,
        run.repo_dir,
        {k: run.snapshot.get(k) for k in ("commit", "branch", "dirty_hash", "digest", "files")},
        run.args,
        run.variables,
        run.tag,
        [
            JobRecordView(
                j.workflow,
                j.status,
                j.exit_code,
                j.error,
                j.reused_from,
                j.upstream,
                j.spec.get("provider"),
                j.record.get("backend"),
                j.record.get("host"),
                j.record.get("inputs", []),
                j.manifest,
                j.spec,
            )
            for j in session.state.jobs(name)
        ],
    )
