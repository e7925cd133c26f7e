"""The SQLite state: one connection per process, WAL, short transactions, conditional updates."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dstack.errors import HomeError, NotFoundError, RunStateError
from dstack.home import Home
from dstack.state.records import IN_ACTIVE, JobRecord, RunRecord

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE runs (
    name TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL, repo_dir TEXT NOT NULL,
    args TEXT NOT NULL, variables TEXT NOT NULL, tag TEXT,
    supervisor_pid INTEGER, supervisor_start INTEGER, stop_request TEXT,
    exit_code INTEGER, detached INTEGER NOT NULL DEFAULT 0, snapshot TEXT NOT NULL,
    placement TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_created ON runs(created_at);
CREATE INDEX runs_status ON runs(status);
CREATE TABLE jobs (
    run_name TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    workflow TEXT NOT NULL, position INTEGER NOT NULL, status TEXT NOT NULL,
    spec TEXT NOT NULL, upstream TEXT NOT NULL,
    started_at REAL, finished_at REAL, exit_code INTEGER, pid INTEGER, pid_start INTEGER,
    job_dir TEXT, cache_key TEXT, reused_from TEXT, manifest TEXT, error TEXT,
    record TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_name, workflow)
);
CREATE INDEX jobs_cache ON jobs(cache_key, status);
CREATE INDEX jobs_workflow ON jobs(workflow, status, finished_at);
CREATE TABLE hosts (
    name TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, user TEXT,
    identity_file TEXT, slots INTEGER NOT NULL, facts TEXT NOT NULL, added_at REAL NOT NULL
);
CREATE TABLE leases (
    host_name TEXT NOT NULL, slot INTEGER NOT NULL, run_name TEXT NOT NULL,
    workflow TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (host_name, slot)
);
CREATE TABLE stacks (
    name TEXT PRIMARY KEY, run_name TEXT NOT NULL, workflow TEXT NOT NULL,
    backend TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL, offer TEXT NOT NULL,
    outputs TEXT, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
"""

_ADJECTIVES = (
    "amber",
    "brave",
    "calm",
    "clever",
    "eager",
    "fuzzy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucky",
    "mellow",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "shiny",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "young",
    "zesty",
)
_NOUNS = (
    "badger",
    "beaver",
    "bison",
    "crane",
    "eagle",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibis",
    "koala",
    "lemur",
    "lynx",
    "marten",
    "otter",
    "panda",
    "puffin",
    "quail",
    "raven",
    "salmon",
    "tapir",
    "walrus",
    "wombat",
    "yak",
)


RESUMING = -1  # supervisor_pid while a new supervisor for a run is being started
RESET_COMMAND = "dstack init --reset-state"
_DAMAGED = ("file is not a database", "malformed", "database corrupt")


def _damaged(path: Path, error: sqlite3.DatabaseError) -> HomeError:
    return HomeError(
        f"The state database {path} is damaged ({error}).",
        hint=f"move it aside and start a fresh one with `{RESET_COMMAND}` (the damaged file "
        "is kept next to it; runs shared through a bucket store stay listed)",
    )


def damaged_state(error: BaseException) -> HomeError | None:
    """The clear error for a database found damaged while in use, else None."""
    if isinstance(error, sqlite3.DatabaseError) and any(m in str(error) for m in _DAMAGED):
        from dstack.home import home_path

        return _damaged(home_path() / "state.db", error)
    return None


def reset_state(home: Home) -> Path | None:
    """Move a damaged state database (and its WAL files) aside and create a fresh one; where
    the damaged one went, or None when it is healthy and nothing was moved."""
    try:
        conn = sqlite3.connect(home.db_path)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return None
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        pass  # damaged: move it aside
    aside = home.db_path.with_name(f"state.db.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = home.db_path.with_name(f"state.db{suffix}")
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
    State(home).close()
    return aside


def _new_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(1, 9999)}"


class State:
    """All reads and writes of runs, jobs and tags."""

    def __init__(self, home: Home) -> None:
        try:
            self.conn = sqlite3.connect(
                home.db_path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA busy_timeout = 60000")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._create_schema()
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.OperationalError as e:
            raise HomeError(
                f"Cannot open the state database {home.db_path}: {e}.",
                hint="check that DSTACK_HOME is writable and not on a network share",
            ) from e
        except sqlite3.DatabaseError as e:  # not a database at all (garbage, truncated)
            raise _damaged(home.db_path, e) from e

    def _create_schema(self) -> None:
        self._use_wal()
        with self.transaction() as c:
            if c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    c.execute(
                        statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").replace(
                            "CREATE INDEX", "CREATE INDEX IF NOT EXISTS"
                        )
                    )
            columns = {row[1] for row in c.execute("PRAGMA table_info(runs)")}
            if "placement" not in columns:  # a version 1 database
                c.execute("ALTER TABLE runs ADD COLUMN placement TEXT NOT NULL DEFAULT '{}'")
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _use_wal(self) -> None:
        """Switch a new database to WAL. Two processes opening a fresh home at once both try;
        the loser is refused at once (SQLite does not wait for this), so it retries until the
        winner is done and it sees WAL already set."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so concurrent writers queue, never deadlock."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        workflow: str,
        repo_dir: str,
        args: list[str],
        variables: dict[str, Any],
        tag: str | None,
        snapshot: dict[str, Any],
        jobs: Sequence[tuple[str, dict[str, Any], list[str]]],
        detached: bool = False,
        placement: dict[str, Any] | None = None,
        taken: Callable[[str], bool] | None = None,
    ) -> str:
        """Insert a run and its jobs (in topological order) atomically; returns the run name.

        ``taken`` tells whether a name is used elsewhere (by a teammate sharing the store)."""
        for _ in range(100):
            candidate = _new_run_name()
            if taken is not None and taken(candidate):
                continue
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
                            json.dumps(args),
                            json.dumps(variables),
                            tag,
                            int(detached),
                            json.dumps(snapshot),
                            json.dumps(placement or {}),
                        ),
                    )
                    c.executemany(
                        "INSERT INTO jobs (run_name, workflow, position, status, spec, upstream) "
                        "VALUES (?,?,?,?,?,?)",
                        [
                            (candidate, wf, i, "submitted", json.dumps(spec), json.dumps(up))
                            for i, (wf, spec, up) in enumerate(jobs)
                        ],
                    )
                return candidate
            except sqlite3.IntegrityError:
                continue
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

    def update_run(self, name: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as c:
            c.execute(f"UPDATE runs SET {sets} WHERE name = ?", (*fields.values(), name))

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
        self, run_name: str, workflow: str, only_if_active: bool = False, **fields: Any
    ) -> bool:
        values = [json.dumps(v) if k == "record" else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        where = "run_name = ? AND workflow = ?"
        params: list[Any] = [*values, run_name, workflow]
        if only_if_active:
            where += f" AND status {IN_ACTIVE}"
        with self.transaction() as c:
            return c.execute(f"UPDATE jobs SET {sets} WHERE {where}", params).rowcount == 1

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
