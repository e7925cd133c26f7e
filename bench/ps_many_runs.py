"""`dstack ps` with one run and with 10,000 finished runs in the state database.

One real `dstack run hello` creates the database; its rows in `runs` and `jobs` are then copied
with sqlite3 under new names and spread-out creation times.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from _timing import DSTACK, Timing, env_with, print_table, run_checked, seconds, time_command

RUNS = 7
MANY = 10_000
TARGET = 0.5
WORKFLOWS_YAML = "workflows:\n  - name: hello\n    commands:\n      - echo hello\n"
COMMANDS = [["ps"], ["ps", "--json"], ["ps", "-a", "--json"]]


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Column names of ``table`` as the database itself declares them."""
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def clone_runs(db_path: Path, count: int) -> None:
    """Add ``count`` copies of the single run (and its jobs), one a minute back from now."""
    conn = sqlite3.connect(db_path)
    run_cols, job_cols = columns(conn, "runs"), columns(conn, "jobs")
    missing = ({"name", "created_at", "finished_at"} - set(run_cols)) | (
        {"run_name"} - set(job_cols)
    )
    if missing:
        raise SystemExit(
            f"Unexpected schema, no column(s) {sorted(missing)}: "
            + "\n".join(r[0] for r in conn.execute("SELECT sql FROM sqlite_master") if r[0])
        )
    (run,) = conn.execute(f"SELECT {', '.join(run_cols)} FROM runs").fetchall()
    template = dict(zip(run_cols, run, strict=True))
    jobs = [
        dict(zip(job_cols, j, strict=True))
        for j in conn.execute(
            f"SELECT {', '.join(job_cols)} FROM jobs WHERE run_name = ?", (template["name"],)
        )
    ]
    took = (template["finished_at"] or template["created_at"]) - template["created_at"]
    now = time.time()
    new_runs, new_jobs = [], []
    for i in range(count):
        name = f"bench-run-{i:05d}"
        created = now - 60 * (i + 1)
        new_runs.append(
            {**template, "name": name, "created_at": created, "finished_at": created + took}
        )
        new_jobs += [{**job, "run_name": name} for job in jobs]
    with conn:
        conn.executemany(
            f"INSERT INTO runs VALUES ({', '.join('?' * len(run_cols))})",
            [tuple(r[c] for c in run_cols) for r in new_runs],
        )
        conn.executemany(
            f"INSERT INTO jobs VALUES ({', '.join('?' * len(job_cols))})",
            [tuple(j[c] for c in job_cols) for j in new_jobs],
        )
    conn.close()


def time_ps(project: Path, env: dict[str, str]) -> dict[str, Timing]:
    """Timings of each `dstack ps` variant, keyed by its command line."""
    return {
        " ".join(["dstack", *args]): time_command([DSTACK, *args], runs=RUNS, cwd=project, env=env)
        for args in COMMANDS
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dstack-bench-") as tmp:
        project, home = Path(tmp) / "project", Path(tmp) / "home"
        (project / ".dstack").mkdir(parents=True)
        (project / ".dstack" / "workflows.yaml").write_text(WORKFLOWS_YAML)
        env = env_with(DSTACK_HOME=str(home))
        run_checked([DSTACK, "run", "hello"], cwd=project, env=env)
        one = time_ps(project, env)
        start = time.perf_counter()
        clone_runs(home / "state.db", MANY - 1)
        fill = time.perf_counter() - start
        many = time_ps(project, env)
    rows = [
        [label, seconds(one[label].median), seconds(many[label].median), seconds(many[label].min)]
        for label in one
    ]
    print_table(
        f"dstack ps, wall seconds ({RUNS} runs after 1 warm-up; "
        f"filled {MANY:,} runs in {fill:.2f} s)",
        ["command", "1 run median", f"{MANY:,} median", f"{MANY:,} min"],
        rows,
    )
    for label in ("dstack ps", "dstack ps --json"):
        verdict = "met" if many[label].median < TARGET else "missed"
        print(
            f"{label} with {MANY:,} runs: {seconds(many[label].median)} s median, "
            f"target < {TARGET} s: {verdict}"
        )


if __name__ == "__main__":
    main()
