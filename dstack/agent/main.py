"""The agent's loop: `python3 agent.pyz JOB_DIR`, started detached next to one job.

While the job runs it sends the new log every 2 s (or at once when a mebibyte is waiting),
saves the `mount: true` artifacts whenever they change, and writes a heartbeat. When the job
has ended (its `rc` file, or its process gone) it sends the rest of the log, stores every
artifact file, seals the manifest (complete when the job exited 0, partial otherwise), writes
the final status, and only then says `sealed` in the job's folder.

Nothing is lost when the store is unreachable: the log and the files stay on the host's disk
and what was not sent is sent on the next try (every write is idempotent: the same key gets
the same bytes; a log part's length is recorded before it is sent, so a part sent again after
a crash is the very same part). A second agent for the same job exits at once (a lock on the
job's folder), so starting one again after a crash, a kill or a reboot is always safe: it
resumes from agent-state.json. The job's process group is the job's own (its wrapper's
session): killing the agent never kills the job.

While the job runs the agent also looks for a stop request in the store (dstack.agent.stop)
and stops the job when it finds one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dstack.agent import http
from dstack.agent.config import AgentConfig
from dstack.agent.keys import log_part_key, status_key
from dstack.agent.stop import LIMIT, STOP_EVERY, STOP_GRACE, StopRequest, signal_job
from dstack.agent.store import GrantedStore
from dstack.atomic import write_text_atomic
from dstack.errors import DstackError
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Manifest, StatCache, scan_files

LOG_EVERY = 2.0  # seconds between log uploads while lines keep coming
LOG_PART = 1 << 20  # a log part is sent at once when this much is waiting, and never larger
MOUNTS_EVERY = 0.5  # seconds between looks at the `mount: true` artifacts
HEARTBEAT_EVERY = 5.0
TICK = 0.2
BACKOFF_MAX = 10.0  # seconds between tries while the store does not answer

# Files of the job's folder the agent owns (the laptop reads STATUS and SEALED over SSH).
CONFIG, STATE, STATUS, LOCK, LOG = (
    "agent.json",
    "agent-state.json",
    "agent-status.json",
    "agent.lock",
    "agent.log",
)

log = logging.getLogger("dstack.agent")


class Agent:
    def __init__(self, job_dir: Path, config: AgentConfig) -> None:
        self.dir, self.config = job_dir, config
        self.store = GrantedStore(config.grants, config.store_url)
        self.blobs = BlobStore(self.store, Path(config.known_blobs))
        self.stats = StatCache.load(job_dir / "agent-stats.json")
        state = _read_json(job_dir / STATE)
        self.log_offset = _number(state.get("log_offset"), 0)
        self.log_parts = _number(state.get("log_parts"), 0)
        # the length of the log part being sent, recorded before it goes (None: none)
        self.sending: int | None = _number(state.get("sending"), 0) or None
        started = state.get("started_at")  # the first agent's start, kept by those after it
        self.started_at = started if type(started) is float else time.time()
        self.stop: StopRequest | None = None  # the stop request acted on
        if state.get("stop") is not None:
            with contextlib.suppress(ValueError):  # only an agent writes it: never invalid
                self.stop = StopRequest.from_dict(state["stop"])
        sealed = state.get("sealed")  # [exit code, reason] once this job was sealed
        self.sealed = sealed if isinstance(sealed, list) and len(sealed) == 2 else None
        self.live = ""  # the live manifest last saved
        self.next_log = self.next_mounts = self.next_beat = self.next_stop_look = 0.0
        self.kill_at: float | None = None  # when the job gets KILL after a stop request
        self.refused = b""  # the last stop request that was not valid (said once)
        self.retry_at, self.backoff = 0.0, 1.0
        self.failing: str | None = None

    # the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        if self.sealed is not None:  # started again after the end: nothing more to say
            self._local_status("sealed", *self.sealed)
            return 0
        log.info("agent %d watches %s/%s", os.getpid(), self.config.run, self.config.job)
        if self.stop is not None and self.ended() is None:  # stopping when it was restarted
            self._signal(signal.SIGKILL if self.stop.abort else signal.SIGTERM)
            self.kill_at = time.monotonic() + (0.0 if self.stop.abort else STOP_GRACE)
        while True:
            ended = self.ended()
            if ended is not None:  # no heartbeat after the end: the seal says the rest
                return self.seal(*ended)
            now = time.monotonic()
            self.watch_stop(now)
            if now >= self.retry_at:
                self._try(partial(self._tick, now))
            time.sleep(TICK)

    def _tick(self, now: float) -> None:
        if now >= self.next_log or self._waiting_log() >= LOG_PART:
            self.next_log = now + LOG_EVERY
            self.send_log()
        if self.config.mounts and now >= self.next_mounts:
            self.next_mounts = now + MOUNTS_EVERY
            self.save_mounts()
        if now >= self.next_beat:
            self.next_beat = now + HEARTBEAT_EVERY
            self.write_status("running")  # with stopped_by once a stop request came

    def _try(self, step: Callable[[], None]) -> bool:
        """Run one step; a store that does not answer is tried again later, with backoff."""
        try:
            step()
        except (DstackError, OSError) as e:
            reason = getattr(e, "message", str(e))
            if self.failing != reason:
                log.warning("the store does not take the job's data (will retry): %s", reason)
            self.failing = reason
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            self._local_status("buffering", reason=reason)
            return False
        if self.failing is not None:
            log.info("the store answers again")
        self.failing, self.backoff = None, 1.0
        return True

    # the job ------------------------------------------------------------------------------

    def ended(self) -> tuple[int, str | None] | None:
        """(exit code, reason) once the job ended; None while it runs."""
        reason = self.stop.reason if self.stop else None
        code = self._rc()
        if code is not None:
            return code, reason
        if _alive(self.config.pid, self.config.pid_start):
            return None
        code = self._rc()  # it may have ended between the two looks
        if code is not None:
            return code, reason
        if self.stop is not None:
            return 128 + signal.SIGKILL, reason
        return 255, "the job's process vanished on the host (killed, or the host restarted)"

    # stop requests ------------------------------------------------------------------------

    def watch_stop(self, now: float) -> None:
        """Look for a stop request now and then; KILL the job once its grace is over."""
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self._signal(signal.SIGKILL)
        if self.stop is not None or not self.config.stop_url or now < self.next_stop_look:
            return
        self.next_stop_look = now + STOP_EVERY
        try:
            raw = http.fetch(self.config.stop_url, "the job's stop request", LIMIT)
        except DstackError as e:  # the store does not answer: the log and statuses say so
            log.debug("cannot look for a stop request: %s", e.message)
            return
        if raw is None:
            return
        try:
            request = StopRequest.parse(raw)
        except ValueError as e:
            if raw != self.refused:
                self.refused = raw
                log.warning("ignored a stop request that is not valid: %s", e)
            return
        log.info("%s (%s)", request.reason, "abort" if request.abort else "TERM, then KILL")
        self.stop = request
        self._save_state()
        self._signal(signal.SIGKILL if request.abort else signal.SIGTERM)
        self.kill_at = None if request.abort else now + STOP_GRACE
        self.next_beat = 0.0  # say who stopped it at once

    def _signal(self, sig: int) -> None:
        signal_job(self.dir, self.config.pid, self.config.pid_start, sig)

    def _rc(self) -> int | None:
        try:
            return int((self.dir / "rc").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    # the log ------------------------------------------------------------------------------

    def _waiting_log(self) -> int:
        try:
            return (self.dir / "log").stat().st_size - self.log_offset
        except FileNotFoundError:
            return 0

    def send_log(self) -> None:
        """Send what the log gained since the last part, a mebibyte per part. A part's length
        is recorded before it is sent: sent again after a crash, it is the same bytes."""
        while True:
            if self.sending is None:
                waiting = min(self._waiting_log(), LOG_PART)
                if waiting <= 0:
                    return
                self.sending = waiting
                self._save_state()
            with open(self.dir / "log", "rb") as source:
                source.seek(self.log_offset)
                data = source.read(self.sending)
            if not data:  # the log was cut short under the agent: start from what is there
                self.sending = None
                return
            self.store.put_bytes(
                log_part_key(self.config.run, self.config.job, self.log_parts), data
            )
            self.log_offset += len(data)
            self.log_parts += 1
            self.sending = None
            self._save_state()

    def _save_state(self) -> None:
        state = {
            "log_offset": self.log_offset,
            "log_parts": self.log_parts,
            "sending": self.sending,
            "started_at": self.started_at,
            "stop": self.stop.to_dict() if self.stop else None,
            "sealed": self.sealed,
        }
        write_text_atomic(self.dir / STATE, json.dumps(state))

    # artifacts ----------------------------------------------------------------------------

    def save_mounts(self) -> None:
        manifest = self._manifest(self.config.mounts, "live")
        raw = manifest.to_json().decode()
        if raw != self.live:
            self.store.put_bytes(self.config.manifest, raw.encode())
            self.live = raw

    def _manifest(self, paths: list[str], state: str) -> Manifest:
        entries = scan_files(self.dir / "work", paths, self.blobs, self.stats)
        self.stats.save()
        return Manifest(entries, state, paths)

    def seal(self, code: int, reason: str | None) -> int:
        """Send the whole log, store every artifact and seal the manifest; retried until the
        seal grace runs out (then `seal-failed`: the laptop saves the files itself)."""
        log.info("the job ended with code %d; sealing", code)
        give_up = time.monotonic() + self.config.seal_grace
        state = "complete" if code == 0 and self.stop is None else "partial"

        def step() -> None:
            self.send_log()
            if self.config.artifacts:
                manifest = self._manifest(self.config.artifacts, state)
                self.store.put_bytes(self.config.manifest, manifest.to_json())
            self.write_status("sealed", code, reason)

        while not self._try(step):
            if time.monotonic() >= give_up:
                log.error("gave up sealing after %.0f s: %s", self.config.seal_grace, self.failing)
                self._local_status("seal-failed", code, self.failing)
                return 1
            time.sleep(max(0.0, self.retry_at - time.monotonic()))
        self.sealed = [code, reason]
        self._save_state()
        self._local_status("sealed", code, reason)
        log.info("sealed")
        return 0

    # status -------------------------------------------------------------------------------

    def _status(self, state: str, code: int | None, reason: str | None) -> dict[str, Any]:
        return {
            "version": 1,
            "run": self.config.run,
            "job": self.config.job,
            "host": self.config.host,
            "state": state,
            "exit_code": code,
            "reason": reason,
            "stopped_by": self.stop.by if self.stop else None,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "log_parts": self.log_parts,
            "log_bytes": self.log_offset,
            "manifest": self.config.manifest
            if self.config.artifacts or self.config.mounts
            else None,
        }

    def write_status(self, state: str, code: int | None = None, reason: str | None = None) -> None:
        """The job's status in the store (what teammates see), then on the host."""
        status = self._status(state, code, reason)
        self.store.put_bytes(
            status_key(self.config.run, self.config.job), json.dumps(status).encode()
        )
        if state != "sealed":  # the host's copy says sealed only once the agent is done
            self._local_status(state, code, reason)

    def _local_status(self, state: str, code: int | None = None, reason: str | None = None) -> None:
        write_text_atomic(self.dir / STATUS, json.dumps(self._status(state, code, reason)))


def _alive(pid: int, start: int | None) -> bool:
    """Whether the job's process (the pid that started at ``start``, ticks since boot) lives
    and is not a zombie: the same test as job-poll.sh."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return fields[0] != "Z" and (start is None or fields[19] == str(start))


def _number(value: object, default: int) -> int:
    """A count from agent-state.json (written by an agent, read back all the same)."""
    return value if type(value) is int and value >= 0 else default


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


LOCK_WAIT = 0.5  # seconds a new agent tries for the job's lock


def _take_lock(lock: Any) -> bool:
    """The job's lock; False when another agent holds it. agent-launch.sh and agent-status.sh
    look at the lock by taking it for a moment: an agent that tried once, during such a look,
    would exit and leave the job without one (measured: 11 launches in 100)."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def main(argv: list[str]) -> int:
    """``JOB_DIR``: watch the job to its end; ``JOB_DIR --check``: write the job's first
    status to the store and exit, 0 when the store took it (its error on stderr otherwise)."""
    if len(argv) not in (2, 3) or argv[2:] not in ([], ["--check"]):
        sys.stderr.write("usage: agent.pyz JOB_DIR [--check]\n")
        return 2
    job_dir = Path(argv[1])
    try:
        config = AgentConfig.load(job_dir / CONFIG)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"cannot read {job_dir / CONFIG}: {e}\n")
        return 2
    if argv[2:]:
        try:
            Agent(job_dir, config).write_status("starting")
        except (DstackError, OSError) as e:
            sys.stderr.write(f"{getattr(e, 'message', e)}\n")
            return 1
        return 0
    lock = open(job_dir / LOCK, "a")  # noqa: SIM115 - held for the agent's whole life
    if not _take_lock(lock):
        return 0
    logging.basicConfig(
        filename=str(job_dir / LOG),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    return Agent(job_dir, config).run()
