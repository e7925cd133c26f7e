"""Where a job's ports can be reached: printed URLs, and tunnels from pool and cloud hosts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from dstack.home import Home
from dstack.ssh.forward import Forwards
from dstack.state.db import State
from dstack.state.records import JobRecord

ACCESS = "access"  # the URL path with its token, kept 0600 beside the job's log, not in the state


def save_access(home: Home, run: str, workflow: str, path: str) -> str:
    folder = home.job_dir(run, workflow)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ACCESS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(path)
    return path


def load_access(home: Home, run: str, workflow: str) -> str:
    path: Path = home.job_dir(run, workflow) / ACCESS
    return path.read_text() if path.exists() else ""


def forward_ports(
    home: Home, state: State, forwards: Forwards, job: JobRecord, ports: list[int]
) -> list[int]:
    """The ports on this machine where the job's ports answer: tunnels from its host, or
    the same ports when it runs here."""
    from dstack.backends.base import Context
    from dstack.backends.registry import address_of_job

    reach = address_of_job(Context(home, state), job)
    return ports if reach is None else forwards.add(*reach, ports)


def announce(notes: TextIO, workflow: str, ports: list[int], path: str) -> None:
    for index, port in enumerate(ports):
        notes.write(
            f"dstack: {workflow} $PORT_{index}: http://localhost:{port}{path if index == 0 else ''}\n"
        )
    notes.flush()


def open_for_job(
    home: Home, state: State, job: JobRecord, forwards: Forwards, notes: TextIO
) -> None:
    """Re-open a running job's tunnels for a new `attach`, and say where its ports are."""
    ports = job.ports
    if not ports:
        return
    ports = forward_ports(home, state, forwards, job, ports)
    announce(notes, job.workflow, ports, load_access(home, job.run_name, job.workflow))
