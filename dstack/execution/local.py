"""The local executor: jobs run on this machine in folders under DSTACK_HOME/runs."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from dstack.atomic import write_text_atomic
from dstack.execution import procs
from dstack.execution.base import (
    ENV,
    LOG,
    RC,
    WRAPPER,
    Executor,
    JobExit,
    JobHandle,
    env_script,
    wrapper_args,
)
from dstack.home import Home
from dstack.scripts import load
from dstack.storage.manifest import Entry, StatCache, materialize, scan_files
from dstack.storage.store import Store


def read_rc(job_dir: Path) -> int | None:
    try:
        return int((job_dir / RC).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def log_bytes(path: Path, offset: int) -> bytes:
    """A log file's bytes from ``offset`` on; none while it does not exist yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


class LocalJob(JobHandle):
    def __init__(
        self,
        job_dir: Path,
        pid: int,
        pid_start: int | None,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.job_dir, self.pid, self.pid_start, self.proc = job_dir, pid, pid_start, proc

    def _running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return procs.alive(self.pid, self.pid_start)

    def poll(self) -> JobExit | None:
        code = read_rc(self.job_dir)
        if code is not None:
            return JobExit(code)
        if self._running():
            return None
        code = read_rc(self.job_dir)  # it may have written rc just before exiting
        if code is not None:
            return JobExit(code)
        forget_env(self.job_dir)  # killed before its wrapper read (and deleted) it
        ret = self.proc.returncode if self.proc is not None else None
        signum = -ret if ret is not None and ret < 0 else None
        reason = (
            f"killed by signal {signal.Signals(signum).name}"
            if signum
            else "the job's process vanished"
        )
        return JobExit(128 + signum if signum else 255, reason)

    def read_log(self, offset: int) -> bytes:
        return log_bytes(self.job_dir / LOG, offset)

    def stop(self, abort: bool, grace: float = 10.0) -> None:
        if not abort:
            procs.signal_group(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
        procs.signal_group(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        forget_env(self.job_dir)


def forget_env(job_dir: Path) -> None:
    """Remove the job's env.sh (its secrets) when the wrapper could not: it never ran."""
    (job_dir / ENV).unlink(missing_ok=True)


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalExecutor(Executor):
    def __init__(self, home: Home, store: Store) -> None:
        self.home, self.store = home, store

    def host_name(self) -> str:
        return socket.gethostname()

    def which(self, command: str) -> bool:
        return shutil.which(command) is not None

    def venv_cache(self) -> str:
        return str(self.home.venvs_dir)

    def job_dir(self, run: str, workflow: str) -> str:
        return str(self.home.job_dir(run, workflow))

    def place(self, job_dir: str, entries: list[Entry], subdir: str = "work") -> None:
        materialize(entries, Path(job_dir) / subdir, self.store.blobs, keep=True)

    def make_dirs(self, job_dir: str, paths: list[str]) -> None:
        work = Path(job_dir) / "work"
        for rel in paths:
            (work / rel).mkdir(parents=True, exist_ok=True)

    def start(self, job_dir: str, workdir: str, script: str, env: dict[str, str]) -> JobHandle:
        folder = Path(job_dir)
        folder.mkdir(parents=True, exist_ok=True)
        env_text = env_script(env)  # refuses bad names before anything is written
        (folder / "job.sh").write_text(script)
        (folder / WRAPPER).write_text(load(WRAPPER))
        write_text_atomic(folder / ENV, env_text)  # 0600, whatever an older one had
        try:
            proc = subprocess.Popen(
                [
                    "bash",
                    str(folder / WRAPPER),
                    *wrapper_args(str(folder), str(folder / "work" / workdir)),
                ],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            forget_env(folder)
            raise
        return LocalJob(folder, proc.pid, procs.start_time(proc.pid), proc)

    def adopt(self, job_dir: str, pid: int, pid_start: int | None) -> JobHandle:
        return LocalJob(Path(job_dir), pid, pid_start)

    def collect(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        return scan_files(Path(job_dir) / "work", paths, self.store.blobs, cache)

    def local_path(self, job_dir: str) -> Path | None:
        return Path(job_dir)

    def free_ports(self, count: int) -> list[int]:
        return [free_local_port() for _ in range(count)]
