"""Which executor runs (or ran) a job: this machine, a pool host or a cloud host over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dstack.backends.catalog import CLOUDS
from dstack.execution.base import Executor
from dstack.execution.local import LocalExecutor
from dstack.home import Home
from dstack.state.db import State
from dstack.storage.store import Store

if TYPE_CHECKING:
    from dstack.ssh.connect import HostAddress


def ssh_executor(
    home: Home, store: Store, state: State, host_name: str, patient: bool = True
) -> Executor:
    """``patient``: keep reconnecting for a minute (a supervisor), or give up in seconds (a view)."""
    from dstack.execution.ssh import SSHExecutor
    from dstack.pool import Pool

    return SSHExecutor(
        Pool(state).host(host_name),
        store,
        home.root / "known_hosts",
        home.runs_dir,
        retry_for=60.0 if patient else 3.0,
    )


def executor_of_job(
    home: Home, store: Store, state: State, record: dict[str, object], patient: bool = True
) -> Executor:
    """From a job's record; jobs recorded before placement existed ran here."""
    if record.get("backend") == "ssh":
        return ssh_executor(home, store, state, str(record["host"]), patient)
    if record.get("backend") in CLOUDS:
        from dstack.runner.clouds import cloud_executor

        return cloud_executor(home, store, state, str(record["host"]), patient)
    return LocalExecutor(home, store)


def host_address(
    home: Home, state: State, backend: str, host_name: str
) -> tuple[HostAddress, Path]:
    """How to reach a pool or cloud host, and the file its host key is pinned in."""
    if backend in CLOUDS:
        from dstack.backends.access import known_hosts
        from dstack.runner.clouds import host_address as cloud_address

        return cloud_address(home, state, host_name), known_hosts(home, host_name)
    from dstack.pool import Pool

    return Pool(state).host(host_name).address, home.root / "known_hosts"
