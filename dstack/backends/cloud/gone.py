"""A cloud host that another home destroyed after its job ended (a teammate's `dstack gc`,
while this home was away): what the job's agent left in the store answers for it, so this
home finishes the job as it ended (exit code, sealed manifest, log) instead of looking for a
host that is no more.

Only the calls that finishing a job makes are answered (poll, read_log, agent_status); any
other use of the host says that it is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from dstack.execution.base import AgentSeen, Executor, JobExit, JobHandle
from dstack.ssh.connect import HostError
from dstack.storage.manifest import Entry, StatCache
from dstack.storage.store import Store


class GoneHost(Executor):
    def __init__(self, store: Store, name: str, run: str, job: str, by: str) -> None:
        self.store, self.name, self.run, self.job, self.by = store, name, run, job, by

    def _gone(self) -> NoReturn:
        raise HostError(f"The cloud host {self.name} is gone: {self.by} destroyed its stack.")

    def host_name(self) -> str:
        return self.name

    def adopt(self, job_dir: str, pid: int, pid_start: int | None) -> JobHandle:
        return _Ended(self)

    def agent_status(self, job_dir: str) -> AgentSeen:
        """What the agent last said in the store (checked); it runs no more."""
        from dstack.storage.joblogs import read_status

        status = read_status(self.store.objects, self.run, self.job)
        if status is None or status.state == "unknown":
            return AgentSeen({"state": "seal-failed", "reason": "its host is gone"}, alive=False)
        said = {"state": status.state, "exit_code": status.exit_code, "reason": status.reason}
        return AgentSeen(said, alive=False)

    def ensure_agent(self, job_dir: str) -> None:
        self._gone()

    def which(self, command: str) -> bool:
        self._gone()

    def venv_cache(self) -> str:
        self._gone()

    def job_dir(self, run: str, workflow: str) -> str:
        self._gone()

    def place(self, job_dir: str, entries: list[Entry], subdir: str = "work") -> None:
        self._gone()

    def make_dirs(self, job_dir: str, paths: list[str]) -> None:
        self._gone()

    def start(self, job_dir: str, workdir: str, script: str, env: dict[str, str]) -> JobHandle:
        self._gone()

    def collect(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        self._gone()

    def local_path(self, job_dir: str) -> Path | None:
        return None

    def free_ports(self, count: int) -> list[int]:
        self._gone()


class _Ended(JobHandle):
    """The job as its agent's last status in the store tells it."""

    pid, pid_start = 0, None

    def __init__(self, host: GoneHost) -> None:
        self.host = host

    def poll(self) -> JobExit | None:
        from dstack.storage.joblogs import read_status

        status = read_status(self.host.store.objects, self.host.run, self.host.job)
        if status is not None and status.sealed and status.exit_code is not None:
            return JobExit(status.exit_code, status.reason)
        return JobExit(255, f"its host was destroyed by {self.host.by} before its end was known")

    def read_log(self, offset: int) -> bytes:
        """The log from ``offset`` on, from the parts the agent sent (numbered from 0; they
        end at the first one missing)."""
        from dstack.agent.keys import log_part_key

        objects, out, part = self.host.store.objects, bytearray(), 0
        while objects.exists(key := log_part_key(self.host.run, self.host.job, part)):
            out += objects.get_bytes(key)
            part += 1
        return bytes(out[offset:])

    def stop(self, abort: bool, grace: float = 10.0) -> None:
        """Nothing runs any more."""
