"""A teammate's run as its hosts' agents show it in the shared store: what `ps` lists of it
and the log `logs` prints, from any home, without the home that started it.

A run's record (dstack.sharing) is published by its home when the run is created and when it
ends, so while it runs, and for ever when that laptop died, the record says it is active. The
jobs' agents keep writing their own status (dstack.storage.joblogs): ``ps`` shows the record
of an active run corrected by them, so a teammate is told the truth:

- a job's agent says starting, running or buffering: the run is ``running`` on that host;
  when no heartbeat came for a minute (QUIET_AFTER) it is shown as ``running?`` (its host may
  be down or cut off from the store: the heartbeat says when it was last heard from);
- every job's agent says sealed: the run has ended, ``done`` when every job exited 0, else
  ``failed`` with the first non-zero exit code;
- a status that cannot be read: ``unknown``.

Only active records of other homes are looked at (one status read per job, in parallel), so
`ps` over thousands of finished runs does no more than before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TextIO

from dstack.errors import StoreError
from dstack.runner.logs import format_line
from dstack.sharing import RunInfo, SharedRun, parse_record
from dstack.storage.joblogs import UNKNOWN, JobStatus, LogParts, read_statuses
from dstack.storage.store import Store, run_key

FOLLOW_EVERY = 1.0  # seconds between looks at the store while following a teammate's log

log = logging.getLogger(__name__)


def seen_by_agents(run: SharedRun, statuses: Mapping[str, JobStatus | None], now: float) -> RunInfo:
    """The run as its record and its jobs' statuses (by job; None: none in the store) show
    it together (see the module's notes)."""
    base = RunInfo.of(run, run.owner)
    found = [s for s in statuses.values() if s is not None]
    if run.finished or not found:
        return base
    live = [s for s in found if s.live]
    sealed = [s for s in found if s.sealed]
    hosts = ", ".join(dict.fromkeys(s.host for s in live or sealed if s.host)) or None
    if run.job_names and all(_sealed(statuses.get(j)) for j in run.job_names):
        code = next((s.exit_code for s in sealed if s.exit_code), 0)
        return replace(
            base,
            status="done" if code == 0 else "failed",
            exit_code=code,
            finished_at=max(s.heartbeat_at or run.created_at for s in sealed),
            host=hosts,
            agents="ended",
        )
    if live:
        return replace(
            base,
            status="running",
            host=hosts,
            seen_at=min(s.heartbeat_at or 0.0 for s in live),
            agents="quiet" if any(s.quiet(now) for s in live) else "running",
        )
    if any(s.state == UNKNOWN for s in found):
        return replace(base, host=hosts, agents=UNKNOWN)
    return replace(base, host=hosts)  # some jobs sealed, the next not started yet


def _sealed(status: JobStatus | None) -> bool:
    return status is not None and status.sealed


def live_runs(store: Store, runs: Sequence[SharedRun]) -> dict[str, RunInfo]:
    """The active ones of ``runs`` (teammates' records) as their agents show them, by name."""
    active = [r for r in runs if not r.finished and r.job_names]
    if not active:
        return {}
    statuses = read_statuses(store.objects, [(r.name, j) for r in active for j in r.job_names])
    for status in statuses.values():
        if status is not None and status.problem:
            log.warning("%s; its job is shown as %s.", status.problem.rstrip("."), UNKNOWN)
    now = time.time()
    return {
        r.name: seen_by_agents(r, {j: statuses[(r.name, j)] for j in r.job_names}, now)
        for r in active
    }


def live_run(store: Store, run: SharedRun) -> RunInfo:
    """One teammate's run as its agents show it (the record alone when it has ended)."""
    return live_runs(store, [run]).get(run.name) or RunInfo.of(run, run.owner)


def write_teammate_logs(
    store: Store,
    run: SharedRun,
    out: TextIO,
    keep_following: bool = False,
    timestamps: bool = False,
    only: str | None = None,
) -> bool:
    """Write the logs the agents of a teammate's run put in the store, as `logs` writes this
    home's (each line prefixed with its job when several are shown); with ``keep_following``
    until every job shown is sealed or the run's record says it ended (a store that stops
    answering meanwhile is waited for). Returns whether any job had a log there (none: its
    jobs' data went through their owner's laptop)."""
    follow = _Follow(store, run, [j for j in run.job_names if only in (None, j)], timestamps)
    while True:
        ending = not keep_following or follow.run.finished
        try:
            sealed = follow.step(out)
        except StoreError as e:
            if not keep_following:
                raise
            follow.warn(e.message)
            sealed = False
        if ending or sealed:
            return follow.seen
        if not follow.seen:
            follow.warn(
                f"No job of run {run.name} has its log in the store yet (one that runs on its "
                "owner's machine never will); waiting for one."
            )
        time.sleep(FOLLOW_EVERY)
        follow.run = _again(store, follow.run)


class _Follow:
    """What following a teammate's logs remembers between looks at the store."""

    def __init__(self, store: Store, run: SharedRun, jobs: list[str], timestamps: bool) -> None:
        from dstack.runner.logs import LogReader

        self.store, self.run, self.jobs, self.timestamps = store, run, jobs, timestamps
        self.parts = {j: LogParts(store.objects, run.name, j) for j in jobs}
        self.readers = {j: LogReader() for j in jobs}
        self.closed: set[str] = set()
        self.seen = False
        self.said: set[str] = set()

    def warn(self, message: str) -> None:
        """Each problem once, however often it is met."""
        if message not in self.said:
            self.said.add(message)
            log.warning("%s", message)

    def step(self, out: TextIO) -> bool:
        """Write what each job's log gained; whether every job shown is sealed."""
        statuses = read_statuses(self.store.objects, [(self.run.name, j) for j in self.jobs])
        for job in self.jobs:
            status = statuses[(self.run.name, job)]
            if status is None or job in self.closed:
                continue
            self.seen = True
            if status.problem:
                self.warn(status.problem)
            self._write(job, status, out)
        out.flush()
        return all(_sealed(statuses[(self.run.name, j)]) for j in self.jobs)

    def _write(self, job: str, status: JobStatus, out: TextIO) -> None:
        """Write the whole lines the job's log gained; its last line too once it has ended."""
        parts, reader = self.parts[job], self.readers[job]
        prefix = f"{job} | " if len(self.jobs) > 1 else ""
        counted = status.log_parts if status.state != UNKNOWN else 0
        ended = status.sealed or self.run.finished
        for data in parts.read_new(counted, more=not status.sealed):
            for stamp, text in reader.feed(data):
                out.write(format_line(stamp, text, prefix, self.timestamps))
        if not ended:
            return
        self.closed.add(job)
        for stamp, text in reader.close():
            out.write(format_line(stamp, text, prefix, self.timestamps))
        if status.sealed and parts.stopped is None and parts.bytes != status.log_bytes:
            self.warn(
                f"The log of {self.run.name}/{job} in the store has {parts.bytes} bytes "
                f"where its host sent {status.log_bytes}."
            )


def _again(store: Store, run: SharedRun) -> SharedRun:
    """The run's record read again (ended when it is gone: the run was removed); the one
    known before when the store does not answer now."""
    try:
        found = store.read_run(run.name)
        if found is None:
            return replace(run, status="stopped")
        return parse_record(run_key(run.name), found[0])
    except StoreError:
        return run
