"""Opening the state database: WAL, the schema and its migrations, and the way back from a
damaged file. Only `State` (in `db`) and the row modules beside it (`hosts`, `stacks`) read or
write rows."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dstack.errors import HomeError
from dstack.home import Home, home_path

SCHEMA_VERSION = 5
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
    record TEXT NOT NULL DEFAULT '{}', placement TEXT NOT NULL DEFAULT '[]',
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
    connect(home.db_path).close()
    return aside


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the state database at ``path``, created or migrated to this version."""
    try:
        conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 60000")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            _create_schema(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    except sqlite3.OperationalError as e:
        raise HomeError(
            f"Cannot open the state database {path}: {e}.",
            hint="check that DSTACK_HOME is writable and not on a network share",
        ) from e
    except sqlite3.DatabaseError as e:  # not a database at all (garbage, truncated)
        raise _damaged(path, e) from e


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front so concurrent writers queue, never deadlock."""
    try:  # BEGIN inside: a Ctrl-C just after it must not leave the write lock held
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_schema(conn: sqlite3.Connection) -> None:
    _use_wal(conn)
    with transaction(conn) as c:
        if c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        for statement in SCHEMA.split(";"):
            if statement.strip():
                c.execute(
                    statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").replace(
                        "CREATE INDEX", "CREATE INDEX IF NOT EXISTS"
                    )
                )
        for table, default in (("runs", "{}"), ("jobs", "[]")):  # versions 1 and 4 lack them
            columns = {row[1] for row in c.execute(f"PRAGMA table_info({table})")}
            if "placement" not in columns:
                c.execute(
                    f"ALTER TABLE {table} ADD COLUMN placement TEXT NOT NULL DEFAULT '{default}'"
                )
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL. Two processes opening a fresh home at once both try;
    the loser is refused at once (SQLite does not wait for this), so it retries until the
    winner is done and it sees WAL already set."""
    from dstack.retry import retry

    def switch() -> None:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")

    retry(
        switch,
        retry_on=lambda e: isinstance(e, sqlite3.OperationalError),
        wait=0.05,
        give_up_after=60,
    )
