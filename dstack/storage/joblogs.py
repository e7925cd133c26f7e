"""A job's status and log as its host's agent writes them to the store (dstack.agent.keys),
read back by any home sharing the store: `ps` shows a teammate's running job from its status,
`logs` prints its log from the parts.

All of it comes from a shared bucket that anyone with write access may have written, so a
status is checked field by field before use (one that fails is ``unknown``, with the reason,
never an exception), and the log is read part after part from 0, each at most PART_MAX bytes,
stopping at the first that is missing where the status counts it, or too big. Part names are
never listed: each part is asked for by the number the next one must have, so a stray name in
the log's folder is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from dstack.agent.keys import log_part_key, status_key
from dstack.errors import StoreError
from dstack.spec.names import shown
from dstack.storage.objects import ObjectStore
from dstack.storage.records import fields_problem, printable_problem, read_record

STATES = ("starting", "running", "buffering", "sealed", "seal-failed")
LIVE = ("starting", "running", "buffering")  # the agent watches a job that has not ended
UNKNOWN = "unknown"  # a status that could not be read: damaged, or not dstack's
STATUS_MAX = 64 << 10  # bytes; an agent's status is a few hundred
PART_MAX = 4 << 20  # bytes; the agent sends parts of at most a mebibyte (agent.main.LOG_PART)
BATCH = 16  # log parts read at once
LOG_PARTS_MAX = 10_000_000  # parts a status may count (10 TB of log)
QUIET_AFTER = 60.0  # seconds without a heartbeat (sent every 5 s) before a job is "quiet"
REASON_MAX = 300  # characters of an agent's reason shown

log = logging.getLogger(__name__)

_HINT = "the job's host writes it again at its next heartbeat, unless the host is gone"
_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "run": (str,),
    "job": (str,),
    "host": (str,),
    "state": (str,),
    "exit_code": (int, type(None)),
    "reason": (str, type(None)),
    "heartbeat_at": (int, float),
    "log_parts": (int,),
    "log_bytes": (int,),
}


@dataclass(frozen=True)
class JobStatus:
    """What a job's agent last said in the store (``state`` is one of STATES, or UNKNOWN
    with the ``problem`` found in what was stored)."""

    job: str
    state: str
    host: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    heartbeat_at: float | None = None
    log_parts: int = 0
    log_bytes: int = 0
    problem: str | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def sealed(self) -> bool:
        return self.state == "sealed"

    def quiet(self, now: float) -> bool:
        """A job said to be running whose agent has not been heard from for QUIET_AFTER."""
        return self.live and self.heartbeat_at is not None and now - self.heartbeat_at > QUIET_AFTER


def status_problem(run: str, job: str, data: object) -> str | None:
    """What is wrong with a status read from the store for ``job`` of ``run``; None when it
    can be shown."""
    why = fields_problem(data, _FIELDS)
    if why is not None:
        return why
    assert isinstance(data, dict)
    if (data["run"], data["job"]) != (run, job):
        return f"names another job ({shown(data['run'])}/{shown(data['job'])})"
    if data["state"] not in STATES:
        return f"has an unknown state {shown(data['state'])}"
    if data["state"] == "sealed" and data["exit_code"] is None:
        return "says sealed without an exit code"
    if data["exit_code"] is not None and not -(1 << 31) <= data["exit_code"] < 1 << 31:
        return f"has an exit code out of range ({str(data['exit_code'])[:20]})"
    if not 0 <= data["log_parts"] <= LOG_PARTS_MAX or not 0 <= data["log_bytes"] <= (
        LOG_PARTS_MAX * PART_MAX
    ):
        return "counts log parts or bytes out of range"
    if not 0 <= data["heartbeat_at"] < 1e11:
        return "has a heartbeat time out of range"
    problem = printable_problem("host", data["host"])
    if problem is None and data["reason"] is not None:
        problem = printable_problem("reason", data["reason"][:REASON_MAX])
    return problem


def parse_status(run: str, job: str, raw: bytes) -> JobStatus:
    """The status stored as ``raw``; UNKNOWN, with what is wrong, when it cannot be used."""
    key = status_key(run, job)
    try:
        if len(raw) > STATUS_MAX:
            raise StoreError(f"The job status {shown(key)} in the store is {len(raw)} bytes long.")
        data = read_record(key, raw, "job status", partial(_problem, run, job), _HINT)
    except StoreError as e:
        return JobStatus(job, UNKNOWN, problem=e.message)
    reason = data["reason"]
    return JobStatus(
        job,
        data["state"],
        data["host"],
        data["exit_code"],
        None if reason is None else reason[:REASON_MAX],
        float(data["heartbeat_at"]),
        data["log_parts"],
        data["log_bytes"],
    )


def _problem(run: str, job: str, key: str, data: Any) -> str | None:
    return status_problem(run, job, data)


def read_status(objects: ObjectStore, run: str, job: str) -> JobStatus | None:
    """The job's status in the store; None when it has none (no agent wrote one: the job has
    not started, or its data goes through the laptop that runs it). A store that refuses the
    read makes it UNKNOWN, with the store's words."""
    try:
        found = objects.read_versioned(status_key(run, job))
    except StoreError as e:
        return JobStatus(job, UNKNOWN, problem=e.message)
    return None if found is None else parse_status(run, job, found[0])


def read_statuses(
    objects: ObjectStore, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], JobStatus | None]:
    """The status of each (run, job), read in parallel."""
    pairs = list(wanted)
    if len(pairs) <= 1:
        return {p: read_status(objects, *p) for p in pairs}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(objects.parallelism, len(pairs))) as pool:
        found = pool.map(lambda p: read_status(objects, *p), pairs)
        return dict(zip(pairs, found, strict=True))


class _Stop(str):
    """Why the log cannot be read past a part."""


class LogParts:
    """One job's log from the store, read on from where the last look stopped: each look
    yields the bytes of the parts written since, a batch at a time (the parts together are
    the host's log file). Once a part is found missing or too big, nothing more is read;
    ``stopped`` says why (and a warning said so)."""

    def __init__(self, objects: ObjectStore, run: str, job: str) -> None:
        self.objects, self.run, self.job = objects, run, job
        self.next = 0  # the number of the next part to read
        self.bytes = 0  # bytes read so far
        self.stopped: str | None = None

    def read_new(self, counted: int, more: bool = True) -> Iterator[bytes]:
        """The parts from the next one on, at most BATCH at a time: those below ``counted``
        (the status's count: each must be there) in parallel, then, with ``more``, any
        written since. A StoreError leaves the batch it met to be read again."""
        while self.stopped is None:
            out, start = bytearray(), self.next
            try:
                self._batch(out, counted, more)
            except StoreError:
                self.next = start
                raise
            if not out:
                return
            self.bytes += len(out)
            yield bytes(out)

    def _batch(self, out: bytearray, counted: int, more: bool) -> None:
        if self.next < counted:
            found = self._map(range(self.next, min(counted, self.next + BATCH)))
        else:
            found = [self._part(self.next)] if more else []
        for data in found:
            if data is None:
                if self.next < counted:
                    self._stop(f"part {self.next} of the {counted} its host counted is missing")
                return
            if isinstance(data, _Stop):
                self._stop(data)
                return
            out += data
            self.next += 1

    def _stop(self, why: str) -> None:
        self.stopped = why
        log.warning(
            "The log of %s/%s in the store is shown up to part %d: %s.",
            self.run,
            self.job,
            self.next,
            why,
        )

    def _map(self, numbers: range) -> list[bytes | _Stop | None]:
        if len(numbers) <= 1:
            return [self._part(n) for n in numbers]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.objects.parallelism, len(numbers))) as pool:
            return list(pool.map(self._part, numbers))

    def _part(self, number: int) -> bytes | _Stop | None:
        """Part ``number``; None when it is not (yet) there, _Stop when it is too big."""
        key = log_part_key(self.run, self.job, number)
        if not self.objects.exists(key):
            return None
        data = bytearray()
        for chunk in self.objects.open_read(key):
            data += chunk
            if len(data) > PART_MAX:
                return _Stop(f"part {number} is over {PART_MAX >> 20} MiB (an agent sends 1 MiB)")
        return bytes(data)
