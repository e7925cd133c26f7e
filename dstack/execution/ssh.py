"""The SSH executor: the same job wrapper as on this machine, run on a pool host over Fabric.

Files move through a content-addressed cache on the host (`~/.dstack/blobs`): only blobs the
host has never seen are uploaded, and the working copy is assembled there from the cache.
Artifacts come back the same way: only files whose hash the store lacks are downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dstack.execution.base import (
    ENV,
    WRAPPER,
    AgentSeen,
    Executor,
    JobExit,
    JobHandle,
    env_script,
    wrapper_args,
)
from dstack.execution.remote_tree import place_on_host
from dstack.home import Home
from dstack.scripts import load
from dstack.ssh.connect import HostAddress, HostError
from dstack.ssh.probe import HostFacts
from dstack.ssh.remote import Remote
from dstack.storage.blobs import file_sha256
from dstack.storage.manifest import Entry, StatCache, safe_relative, scan_files
from dstack.storage.store import Store

if TYPE_CHECKING:
    from dstack.agent.config import AgentConfig

log = logging.getLogger(__name__)

_FIELDS = 6  # per file listed by tree-list.sh
# Paths OpenSSH takes verbatim in -i and -o: no blanks (word splitting), no quotes, and no
# '%' or '$' (it expands %h and ${VAR} in them). Others make rsync give way to SFTP.
_SSH_PLAIN = re.compile(r"^[\w./+,=@:-]+$")


class SSHHost(Protocol):
    """What the executor needs of a host: a pool server and a cloud VM alike."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> HostAddress: ...

    @property
    def facts(self) -> HostFacts: ...


class SSHJob(JobHandle):
    def __init__(self, remote: Remote, job_dir: str, pid: int, pid_start: int | None) -> None:
        self.remote, self.job_dir, self.pid, self.pid_start = remote, job_dir, pid, pid_start

    def poll(self) -> JobExit | None:
        start = "" if self.pid_start is None else self.pid_start
        out = self.remote.check_script("job-poll.sh", self.job_dir, self.pid, start)
        word, _, code = out.decode().strip().partition(" ")
        if word == "rc":
            return JobExit(int(code))
        if word == "running":
            return None
        full = self.remote.full_disk(self.job_dir, "the job's exit code could not be written")
        return JobExit(255, full.message if full else "the job's process vanished on the host")

    def read_log(self, offset: int) -> bytes:
        return self.remote.run_script("job-log.sh", self.job_dir, offset)[1]

    def stop(self, abort: bool, grace: float = 10.0) -> None:
        if not abort:
            self.remote.run_script("job-signal.sh", "TERM", self.pid, self.job_dir)
            deadline = time.monotonic() + grace
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        self.remote.run_script("job-signal.sh", "KILL", self.pid, self.job_dir)


class SSHExecutor(Executor):
    runs_agents = True

    def __init__(
        self,
        host: SSHHost,
        store: Store,
        known_hosts: Path,
        home: Home,
        retry_for: float = 60.0,
        transfer: str = "auto",
    ) -> None:
        """``home``: this laptop's, for rsync mirrors and its own folder of job folders on
        the host (other homes may log in as the same user); ``transfer``: auto, rsync or sftp."""
        self.host, self.store, self.known_hosts = host, store, known_hosts
        self.staging = home.runs_dir
        self.remote = Remote(host.address, known_hosts, retry_for)
        self.root = f"{host.facts.home}/.dstack"
        self.runs = f"{self.root}/runs/{home.id}"
        self.transfer = transfer
        self._hashes: dict[tuple[str, str], tuple[str, str, str]] = {}

    def host_name(self) -> str:
        return self.host.name

    def which(self, command: str) -> bool:
        return self.remote.run_script("host-which.sh", command)[0] == 0

    def venv_cache(self) -> str:
        return f"{self.root}/venvs"

    def job_dir(self, run: str, workflow: str) -> str:
        return f"{self.runs}/{run}/{workflow}"

    def place(self, job_dir: str, entries: list[Entry], subdir: str = "work") -> None:
        place_on_host(
            self.remote, self.store.blobs, f"{self.root}/blobs", f"{job_dir}/{subdir}", entries
        )

    def make_dirs(self, job_dir: str, paths: list[str]) -> None:
        if paths:
            self.remote.check_script("tree-mkdirs.sh", f"{job_dir}/work", *paths)

    def start(self, job_dir: str, workdir: str, script: str, env: dict[str, str]) -> JobHandle:
        env_text = env_script(env)  # refuses bad names before anything is written
        self.remote.check_script("job-prepare.sh", job_dir)
        self.remote.put_bytes(script.encode(), f"{job_dir}/job.sh")
        self.remote.put_bytes(env_text.encode(), f"{job_dir}/{ENV}", mode=0o600)
        self.remote.put_bytes(load(WRAPPER).encode(), f"{job_dir}/{WRAPPER}")
        args = wrapper_args(job_dir, f"{job_dir}/work/{workdir}")
        self.remote.check_script("job-launch.sh", *args)
        out = self.remote.check_script("job-started.sh", job_dir)
        pid, _, started = out.decode().strip().partition(" ")
        if not pid.isdigit():  # job-started.sh removed env.sh: the wrapper never read it
            raise HostError(
                f"The job did not start on {self.host.address.label}: its wrapper wrote no pid.",
                hint=f"check that bash works there and that {job_dir} is writable",
            )
        return SSHJob(self.remote, job_dir, int(pid), int(started) if started else None)

    def adopt(self, job_dir: str, pid: int, pid_start: int | None) -> JobHandle:
        return SSHJob(self.remote, job_dir, pid, pid_start)

    def collect(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        """Artifacts by rsync into a local mirror when both ends have it, else by SFTP."""
        if self.transfer == "auto":
            both = shutil.which("rsync") is not None and self.which("rsync")
            self.transfer = "rsync" if both and self._ssh_plain() else "sftp"
        if self.transfer == "rsync":
            return self._collect_rsync(job_dir, paths, cache)
        return self._collect_sftp(job_dir, paths, cache)

    def _ssh_plain(self) -> bool:
        """Whether the ssh command rsync runs can name our files as they are."""
        paths = [str(self.known_hosts), self.host.address.identity_file or "."]
        return all(_SSH_PLAIN.match(path) for path in paths)

    def _collect_rsync(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        """rsync moves only changed bytes into a mirror; its files are hashed and hard-linked
        into the store (rsync replaces files, never edits them, so blobs stay immutable)."""
        relative = job_dir.removeprefix(f"{self.runs}/")
        if relative == job_dir:  # not a run folder of ours: a folder named after the path
            relative = hashlib.sha256(job_dir.encode()).hexdigest()[:16]
        mirror = self.staging / relative / "mirror"
        mirror.mkdir(parents=True, exist_ok=True)
        address = self.host.address
        ssh = [
            "ssh",
            "-p",
            str(address.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        if address.identity_file:
            ssh += ["-i", address.identity_file, "-o", "IdentitiesOnly=yes"]
        if address.user:
            ssh += ["-l", address.user]  # apart from the host: a login may hold '@' (AD users)
        host = f"[{address.host}]" if ":" in address.host else address.host  # IPv6
        source = f"{host}:{job_dir}/work/"
        done = subprocess.run(
            [
                "rsync",
                "-a",
                "-r",
                "--delete",
                "--protect-args",  # the remote path goes to rsync as it is, not to a shell
                "--from0",
                "--files-from=-",
                "-e",
                shlex.join(ssh),
                source,
                str(mirror),
            ],
            input="\0".join(paths) + "\0",
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 23, 24):  # 23/24: some files vanished or changed meanwhile
            raise HostError(f"rsync from {address.label} failed: {done.stderr.strip()[-300:]}")
        return scan_files(mirror, paths, self.store.blobs, cache, link=True)

    def _collect_sftp(self, job_dir: str, paths: list[str], cache: StatCache) -> list[Entry]:
        out = self.remote.check_script("tree-list.sh", f"{job_dir}/work", *paths)
        fields = out.decode().split("\0")[:-1]
        listed = [fields[i : i + _FIELDS] for i in range(0, len(fields) - _FIELDS + 1, _FIELDS)]
        changed = [
            row[5]
            for row in listed
            if row[0] == "f" and self._hashes.get((job_dir, row[5]), ("",))[:2] != (row[1], row[2])
        ]
        if changed:
            sums = self.remote.check_script(
                "tree-sha256.sh", f"{job_dir}/work", data=b"\0".join(p.encode() for p in changed)
            )
            stat = {row[5]: (row[1], row[2]) for row in listed}
            for name, sha in _parse_sums(sums.decode()):
                if name in stat:
                    self._hashes[(job_dir, name)] = (*stat[name], sha)
        entries = []
        for kind, size, _, mode, link, path in listed:
            safe_relative(path)
            if kind == "l":
                entries.append(Entry(path, 0, 0o777, link=link))
                continue
            sha = self._hashes[(job_dir, path)][2]
            if self.store.blobs.has(sha) or self._download(f"{job_dir}/work/{path}", sha):
                entries.append(Entry(path, int(size), int(mode, 8), sha))
            else:  # it changed while we copied it: forget its hash, the next sync takes it
                del self._hashes[(job_dir, path)]
        return entries

    def _download(self, remote_path: str, sha: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "blob"
            self.remote.get(remote_path, local)
            if file_sha256(local) != sha:
                return False
            self.store.blobs.put(local, sha)
            return True

    def local_path(self, job_dir: str) -> Path | None:
        return None

    def free_ports(self, count: int) -> list[int]:
        if not count:
            return []
        out = self.remote.check_script("host-free-ports.sh", count)
        return [int(p) for p in out.split()]

    def close(self) -> None:
        self.remote.close()

    # the job's agent ------------------------------------------------------------------------

    def start_agent(self, job_dir: str, config: AgentConfig) -> str | None:
        where = self.host.address.label
        staged = self._stage_agent()
        if staged is None:
            return f"{where} has no python3 >= 3.9 for dstack's agent"
        known = (
            f"{self.root}/agent/known-{hashlib.sha256(config.store_url.encode()).hexdigest()[:16]}"
        )
        config = dataclasses.replace(config, known_blobs=known)
        self.remote.put_bytes(config.to_json().encode(), f"{job_dir}/agent.json", mode=0o600)
        code, _, err = self.remote.run_script("agent-launch.sh", staged, job_dir, "--check")
        if code != 0:
            reason = err.decode(errors="replace").strip()[-300:] or f"exit status {code}"
            return f"{where} cannot write to {config.store_url}: {reason}"
        self.remote.check_script("agent-launch.sh", staged, job_dir)
        return None

    def ensure_agent(self, job_dir: str) -> None:
        staged = self._stage_agent()
        if staged is not None:
            self.remote.check_script("agent-launch.sh", staged, job_dir)

    def agent_status(self, job_dir: str) -> AgentSeen:
        out = self.remote.check_script("agent-status.sh", job_dir).decode(errors="replace")
        text, _, alive = out.rstrip().rpartition("\n")
        try:
            status = json.loads(text)
        except ValueError:
            status = {}
        return AgentSeen(status if isinstance(status, dict) else {}, alive.strip() == "alive")

    def _stage_agent(self) -> str | None:
        """The agent's bundle on the host, sent when it is not there; None without python3."""
        from dstack.execution.agent_bundle import bundle

        data, sha = bundle()
        path = f"{self.root}/agent/{sha}.pyz"
        answer = self.remote.check_script("agent-stage.sh", path, sha).decode().strip()
        if answer == "missing":
            sent = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.remote.check_script("tree-mkdirs.sh", self.root, "agent")
            self.remote.put_bytes(data, sent)
            answer = self.remote.check_script("agent-stage.sh", path, sha, sent).decode().strip()
        if answer == "ready":
            return path
        log.info("no agent on %s: %s", self.host.address.label, answer)
        return None

    def cleanup(self, job_dir: str) -> None:
        self.remote.run_script("job-cleanup.sh", job_dir)


_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def _parse_sums(text: str) -> list[tuple[str, str]]:
    """(name, sha256) from sha256sum's lines; a line that starts with a backslash has its
    name escaped (a backslash, newline or carriage return in it)."""
    pairs = []
    for line in text.split("\n"):
        escaped = line.startswith("\\")
        sha, _, name = line.removeprefix("\\").partition("  ")
        if escaped:
            name = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), name)
        if sha:
            pairs.append((name, sha))
    return pairs
