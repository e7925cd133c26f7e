"""Following a run's logs from any process: used by `logs -f` and `attach`.

Logs are read from DSTACK_HOME: the job's own log here, or the supervisor's copy of a host
job's log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from dstack.execution.base import LOG
from dstack.execution.local import log_bytes
from dstack.home import Home
from dstack.runner.logs import LogReader, format_line
from dstack.runner.recover import recover
from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.storage.store import Store


def follow(
    home: Home,
    state: State,
    run_name: str,
    out: TextIO,
    keep_following: bool,
    timestamps: bool = False,
    only: str | None = None,
    on_running: Callable[[JobRecord], None] | None = None,
) -> int | None:
    """Print the run's logs; with ``keep_following`` until it ends. Returns its exit code.
    ``on_running`` is called once for each job seen running (attach forwards its ports)."""
    store = Store.open(home)
    readers: dict[str, LogReader] = {}
    seen_running: set[str] = set()
    while True:
        recover(home, state, store)
        run = state.run(run_name)
        jobs = [j for j in state.jobs(run_name) if only in (None, j.workflow)]
        prefix_jobs = len(jobs) > 1
        for job in jobs:
            if not job.job_dir or job.reused_from:
                continue
            if on_running and job.status == "running" and job.workflow not in seen_running:
                seen_running.add(job.workflow)
                on_running(job)
            reader = readers.setdefault(job.workflow, LogReader())
            lines = list(
                reader.feed(log_bytes(home.job_dir(run_name, job.workflow) / LOG, reader.offset))
            )
            if job.finished:
                lines += reader.close()
            for stamp, text in lines:
                out.write(
                    format_line(
                        stamp, text, f"{job.workflow} | " if prefix_jobs else "", timestamps
                    )
                )
            out.flush()
        if run.finished or not keep_following:
            return run.exit_code
        time.sleep(0.2)
