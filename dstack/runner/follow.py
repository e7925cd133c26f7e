"""Following a run's logs from any process: used by `logs -f` and `attach`."""

from __future__ import annotations

import time
from typing import TextIO

from dstack.execution.local import LocalExecutor
from dstack.home import Home
from dstack.runner.logs import LogReader, format_line
from dstack.runner.recover import recover
from dstack.state.db import State
from dstack.storage.store import Store


def follow(
    home: Home,
    state: State,
    run_name: str,
    out: TextIO,
    keep_following: bool,
    timestamps: bool = False,
    only: str | None = None,
) -> int | None:
    """Print the run's logs; with ``keep_following`` until it ends. Returns its exit code."""
    store = Store.open(home)
    executor = LocalExecutor(home, store)
    readers: dict[str, LogReader] = {}
    while True:
        recover(home, state, store)
        run = state.run(run_name)
        jobs = [j for j in state.jobs(run_name) if only in (None, j.workflow)]
        prefix_jobs = len(jobs) > 1
        for job in jobs:
            if not job.job_dir or job.reused_from:
                continue
            reader = readers.setdefault(job.workflow, LogReader())
            handle = executor.adopt(job.job_dir, job.pid or 0, job.pid_start)
            lines = list(reader.feed(handle.read_log(reader.offset)))
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
