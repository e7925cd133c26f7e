"""The SQLite state: one connection per process, WAL, short transactions, conditional updates."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from enum import Enum
from typing import TYPE_CHECKING, Any

from dstack.errors import NotFoundError, RunStateError
from dstack.home import Home
from dstack.state.names import new_run_name
from dstack.state.records import IN_ACTIVE, JobRecord, NewJob, RunRecord
from dstack.state.schema import connect, transaction

if TYPE_CHECKING:
    from dstack.offer import Scope

# Re-exported for the CLI, which imports them from here until it imports them from `schema`.


class Unset(Enum):
    """The value of an update's keyword that was not given (None is a value: NULL)."""

    UNSET = "unset"


UNSET = Unset.UNSET
RESUMING = -1  # supervisor_pid while a new supervisor for a run is being started


class State:
    """All reads and writes of runs and jobs."""

    def __init__(self, home: Home) -> None:
        self.conn = connect(home.db_path)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so concurrent writers queue, never deadlock."""
        return transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    # runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        workflow: str,
        repo_dir: str,
        args: Sequence[str],
        variables: Mapping[str, Any],
        tag: str | None,
        snapshot: Mapping[str, Any],
        jobs: Sequence[NewJob],
        detached: bool = False,
        placement: Scope | None = None,
        claim: Callable[[str], bool] | None = None,
    ) -> str:
        """Insert a run and its jobs (in topological order) atomically; returns the run name.
        ``claim(name)`` then takes the name where teammates see it (a create-only write of the
        run's record in a shared store): False when one of them has it, and the run is made
        again under another name; an error removes the run and is raised."""
        for _ in range(100):
            candidate = new_run_name()
            try:
                with self.transaction() as c:
                    c.execute(
                        "INSERT INTO runs (name, workflow, status, created_at, repo_dir, args, "
                        "variables, tag, detached, snapshot, placement) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            candidate,
                            workflow,
                            "submitted",
                            time.time(),
                            repo_dir,
                            json.dumps(list(args)),
                            json.dumps(dict(variables)),
                            tag,
                            int(detached),
                            json.dumps(dict(snapshot)),
                            json.dumps(placement.to_dict() if placement else {}),
                        ),
                    )
                    c.executemany(
                        "INSERT INTO jobs (run_name, workflow, position, status, spec, upstream, "
                        "placement) VALUES (?,?,?,'submitted',?,?,?)",
                        [
                            (
                                candidate,
                                job.workflow,
                                i,
                                json.dumps(job.spec),
                                json.dumps(list(job.upstream)),
                                json.dumps([offer.to_dict() for offer in job.placement]),
                            )
                            for i, job in enumerate(jobs)
                        ],
                    )
            except sqlite3.IntegrityError:
                continue
            try:
                if claim is None or claim(candidate):
                    return candidate
            except BaseException:
                self.delete_run(candidate)
                raise
            self.delete_run(candidate)
        raise RunStateError("Could not find a free run name.")

    def run(self, name: str) -> RunRecord:
        row = self.conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        if row is None:
            from dstack.spec.suggest import did_you_mean

            names = [
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM runs ORDER BY created_at DESC LIMIT 500"
                )
            ]
            raise NotFoundError(
                f"No run named '{name}'.", hint=did_you_mean(name, names) or "see `dstack ps -a`"
            )
        return RunRecord.from_row(row)

    def has_run(self, name: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None
        )

    def run_names(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM runs")}

    def runs(self, include_finished: bool, recent: int = 10) -> list[RunRecord]:
        """Active runs, plus the ``recent`` latest finished ones (all with include_finished)."""
        if include_finished:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at DESC").fetchall()
        else:
            rows = self.conn.execute(
                f"SELECT * FROM runs WHERE status {IN_ACTIVE} UNION "
                "SELECT * FROM (SELECT * FROM runs ORDER BY created_at DESC LIMIT ?) "
                "ORDER BY created_at DESC",
                (recent,),
            ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def active_runs(self) -> list[RunRecord]:
        rows = self.conn.execute(f"SELECT * FROM runs WHERE status {IN_ACTIVE}").fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def update_run(
        self,
        name: str,
        *,
        status: str | Unset = UNSET,
        supervisor_pid: int | None | Unset = UNSET,
        supervisor_start: int | None | Unset = UNSET,
        stop_request: str | None | Unset = UNSET,
    ) -> None:
        """Set the given columns of a run (those left out keep their values)."""
        given = {
            "status": status,
            "supervisor_pid": supervisor_pid,
            "supervisor_start": supervisor_start,
            "stop_request": stop_request,
        }
        self._update("runs", given, "name = ?", (name,))

    def finish_run(self, name: str, status: str, exit_code: int | None) -> bool:
        """Mark a run final unless something else already did; True when this call did."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? "
                f"WHERE name = ? AND status {IN_ACTIVE}",
                (status, exit_code, time.time(), name),
            )
            return cur.rowcount == 1

    def claim_supervision(self, name: str, pid: int | None, started: int | None) -> bool:
        """Take over a run whose supervisor is gone; only one process wins."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE runs SET supervisor_pid = ?, supervisor_start = ? "
                "WHERE name = ? AND supervisor_pid IS ? AND supervisor_start IS ?",
                (RESUMING, int(time.time()), name, pid, started),
            )
            return cur.rowcount == 1

    def delete_run(self, name: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM jobs WHERE run_name = ?", (name,))
            c.execute("DELETE FROM runs WHERE name = ?", (name,))

    # jobs ---------------------------------------------------------------------------------

    def jobs(self, run_name: str) -> list[JobRecord]:
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE run_name = ? ORDER BY position", (run_name,)
        ).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def update_job(
        self,
        run_name: str,
        workflow: str,
        *,
        only_if_active: bool = False,
        status: str | Unset = UNSET,
        exit_code: int | None | Unset = UNSET,
        started_at: float | None | Unset = UNSET,
        finished_at: float | None | Unset = UNSET,
        pid: int | None | Unset = UNSET,
        pid_start: int | None | Unset = UNSET,
        job_dir: str | None | Unset = UNSET,
        cache_key: str | None | Unset = UNSET,
        reused_from: str | None | Unset = UNSET,
        manifest: str | None | Unset = UNSET,
        error: str | None | Unset = UNSET,
        record: Mapping[str, Any] | Unset = UNSET,
    ) -> bool:
        """Set the given columns of a job; with ``only_if_active``, only while it has not
        ended. True when the job was changed."""
        given = {
            "status": status,
            "exit_code": exit_code,
            "started_at": started_at,
            "finished_at": finished_at,
            "pid": pid,
            "pid_start": pid_start,
            "job_dir": job_dir,
            "cache_key": cache_key,
            "reused_from": reused_from,
            "manifest": manifest,
            "error": error,
            "record": UNSET if isinstance(record, Unset) else json.dumps(dict(record)),
        }
        where = "run_name = ? AND workflow = ?"
        if only_if_active:
            where += f" AND status {IN_ACTIVE}"
        return self._update("jobs", given, where, (run_name, workflow)) == 1

    def _update(
        self, table: str, given: Mapping[str, object], where: str, params: tuple[object, ...]
    ) -> int:
        """UPDATE the columns given a value; the table and column names come from the fixed
        lists in the callers above, never from a caller's keywords. Returns the rows changed."""
        values = {column: v for column, v in given.items() if not isinstance(v, Unset)}
        if not values:
            raise TypeError(f"nothing to update in {table}")
        sets = ", ".join(f"{column} = ?" for column in values)
        with self.transaction() as c:
            sql = f"UPDATE {table} SET {sets} WHERE {where}"
            return c.execute(sql, (*values.values(), *params)).rowcount

    def cached_job(self, cache_key: str) -> JobRecord | None:
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE cache_key = ? AND status = 'done' AND manifest IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT 1",
            (cache_key,),
        ).fetchone()
        return JobRecord.from_row(row) if row else None

    def last_successful_job(self, workflow: str) -> JobRecord | None:
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE workflow = ? AND status = 'done' AND manifest IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT 1",
            (workflow,),
        ).fetchone()
        return JobRecord.from_row(row) if row else None

    def manifests_used_outside(self, run_name: str) -> set[str]:
        """Manifests of this run that jobs of other runs reuse (so removing the run keeps them)."""
        rows = self.conn.execute(
            "SELECT manifest FROM jobs WHERE run_name != ? AND manifest LIKE ?",
            (run_name, f"manifests/{run_name}/%"),
        ).fetchall()
        return {r[0] for r in rows}

    # tags of version 2 databases, moved into the store once ----------------------------

    def legacy_tags(self) -> list[tuple[str, str, dict[str, str]]] | None:
        """(tag, run, manifests) rows of the tags table version 2 kept here; None when gone."""
        if not self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tags'"
        ).fetchone():
            return None
        rows = self.conn.execute("SELECT name, run_name, manifests FROM tags").fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def drop_legacy_tags(self) -> None:
        with self.transaction() as c:
            c.execute("DROP TABLE IF EXISTS tags")
