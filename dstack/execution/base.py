"""The executor interface shared by this machine and SSH hosts, and what their job wrapper
(dstack/scripts/wrapper.sh) is given: its arguments and the job's env.sh."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import SpecError
from dstack.secrets import MASK, env_name_problem, mask_pieces
from dstack.storage.manifest import Entry, StatCache

if TYPE_CHECKING:
    from dstack.agent.config import AgentConfig

# The files of a job's folder; dstack/scripts/wrapper.sh and the job-*.sh scripts name them too.
LOG, PID, RC, ENV = "log", "pid", "rc", "env.sh"
WRAPPER = "wrapper.sh"  # the job wrapper, copied into each job's folder


def wrapper_args(job_dir: str, workdir: str) -> list[str]:
    """The wrapper's arguments: where the job's files are, where it runs, what masks secrets."""
    return [job_dir, workdir, MASK]


def env_script(env: dict[str, str]) -> str:
    """env.sh: one quoted assignment per variable, then the pieces of the values named in
    $DSTACK_MASK_VARS. A name that is not an identifier, or that would replace what the
    job's shell needs, is refused here, before anything reaches a shell."""
    for key, value in env.items():
        problem = env_name_problem(key)
        if problem:
            raise SpecError(
                f"'{key}' cannot be an environment variable of a job: {problem}.",
                hint="names are letters, digits and underscores, not starting with a digit; "
                "PATH, HOME, SHELL, USER and the like are the host's own",
            )
        if "\0" in value:
            raise SpecError(
                f"The value of environment variable '{key}' holds a NUL byte, "
                "which no environment can carry.",
                hint="pass binary data in a file instead",
            )
    masked = [env[name] for name in env.get("DSTACK_MASK_VARS", "").split() if name in env]
    pieces = " ".join(shlex.quote(piece) for piece in mask_pieces(masked))
    lines = [f"{key}={shlex.quote(value)}\n" for key, value in env.items()]
    return "".join(lines) + f"DSTACK_MASK_PIECES=({pieces})\n"


@dataclass(frozen=True)
class AgentSeen:
    """A job's agent as its host shows it: the status it last wrote (agent-status.json,
    unchecked: it comes from the host) and whether it still runs."""

    status: dict[str, Any]
    alive: bool

    @property
    def state(self) -> str:
        """starting, running, buffering (the store does not answer), sealed or seal-failed."""
        value = self.status.get("state")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class JobExit:
    """How a job ended: its exit code, and why when it did not end by itself."""

    code: int
    reason: str | None = None


class JobHandle(ABC):
    """A started job; works the same whether this process started it or adopted it later."""

    pid: int
    pid_start: int | None

    @abstractmethod
    def poll(self) -> JobExit | None:
        """None while the job runs."""

    @abstractmethod
    def read_log(self, offset: int) -> bytes:
        """Log bytes from ``offset`` on (timestamped lines)."""

    @abstractmethod
    def stop(self, abort: bool, grace: float = 10.0) -> None:
        """TERM the whole process group, KILL after ``grace`` seconds (at once with ``abort``)."""


class Executor(ABC):
    """Runs jobs on one host."""

    runs_agents = False  # whether a dstack agent can run next to its jobs (dstack.agent)

    @abstractmethod
    def host_name(self) -> str: ...

    @abstractmethod
    def which(self, command: str) -> bool: ...

    @abstractmethod
    def venv_cache(self) -> str: ...

    @abstractmethod
    def job_dir(self, run: str, workflow: str) -> str: ...

    @abstractmethod
    def place(self, job_dir: str, entries: list[Entry], subdir: str = "work") -> None:
        """Write stored files (code snapshot, input artifacts) under the job's folder."""

    @abstractmethod
    def make_dirs(self, job_dir: str, paths: list[str]) -> None:
        """Create artifact folders inside the working copy before the job starts."""

    @abstractmethod
    def start(self, job_dir: str, workdir: str, script: str, env: dict[str, str]) -> JobHandle: ...

    @abstractmethod
    def adopt(self, job_dir: str, pid: int, pid_start: int | None) -> JobHandle:
        """A handle for a job some earlier process started."""

    @abstractmethod
    def collect(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        """Store the job's artifact files and return their entries."""

    @abstractmethod
    def local_path(self, job_dir: str) -> Path | None:
        """The job folder on this machine, when it is here."""

    @abstractmethod
    def free_ports(self, count: int) -> list[int]:
        """Ports nothing listens on, on the host, for $PORT_0..."""

    def close(self) -> None:
        """Let go of connections to the host."""

    def start_agent(self, job_dir: str, config: AgentConfig) -> str | None:
        """Start the job's agent; None once it runs and has written to the store, else why
        the job's log and artifacts go through this machine instead."""
        return "its host runs no agent"

    def ensure_agent(self, job_dir: str) -> None:
        """Start the job's agent again when it is gone: it resumes where it stopped."""

    def agent_status(self, job_dir: str) -> AgentSeen:
        return AgentSeen({}, alive=False)

    def cleanup(self, job_dir: str) -> None:
        """Remove the job's folder once its artifacts and log are safe (hosts only)."""
