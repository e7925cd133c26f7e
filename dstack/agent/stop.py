"""Stopping a job through the store, for when no one can reach its host over SSH: any home
that shares the store (a teammate, or the laptop that started it) writes a stop request to
`jobs/RUN/JOB/stop` (dstack.agent.keys.stop_key); the job's agent reads it through a signed
GET link (AgentConfig.stop_url; 404: no request) and stops the job: TERM to its process
group, KILL after STOP_GRACE seconds (at once with ``abort``). It then seals what was saved
(partial) with the reason "stopped by WHO".

Anyone who may write to the bucket can write that object, so it is read with a size limit
and every field is checked; the agent ignores one that is not valid (and says so in its log).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
LIMIT = 1024  # bytes a stop request may have
WHO_MAX = 100  # characters of the name of who asked
STOP_GRACE = 10.0  # seconds between TERM and KILL, as `dstack stop` over SSH
STOP_EVERY = 3.0  # seconds between the agent's looks for a request


@dataclass(frozen=True)
class StopRequest:
    """``by``: who asked (user@machine, as tags and run records name people); ``at``: when
    (seconds since the epoch, their clock)."""

    by: str
    abort: bool = False
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "by": self.by, "abort": self.abort, "at": self.at}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @property
    def reason(self) -> str:
        return f"stopped by {self.by}"

    @classmethod
    def parse(cls, raw: bytes) -> StopRequest:
        """The request in ``raw``; ValueError saying what is wrong with it."""
        if len(raw) > LIMIT:
            raise ValueError(f"it is larger than {LIMIT} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError("it is not JSON") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> StopRequest:
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        unknown = sorted(set(data) - {"version", "by", "abort", "at"})
        if unknown:
            raise ValueError(f"it has unknown fields: {', '.join(unknown)[:200]}")
        if data.get("version") != VERSION:
            raise ValueError(f"its version is not {VERSION}")
        by, abort, at = data.get("by"), data.get("abort", False), data.get("at", 0.0)
        if not isinstance(by, str) or not 0 < len(by) <= WHO_MAX or not by.isprintable():
            raise ValueError(f"'by' is not a printable name of 1 to {WHO_MAX} characters")
        if not isinstance(abort, bool):
            raise ValueError("'abort' is not true or false")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise ValueError("'at' is not a time")
        return cls(by, abort, float(at))


def signal_job(job_dir: Path, pid: int, start: int | None, sig: int) -> None:
    """Send ``sig`` to the job's process group (its wrapper's session: the group's id is the
    wrapper's pid), unless that pid now names another process (the job ended and the pid was
    given again). As job-signal.sh, remove env.sh: a job stopped before its wrapper read it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ours = start is None or fields[19] == str(start)
    except (OSError, IndexError):
        ours = True  # no such process: only the job's own group can still have the id
    if ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
    with contextlib.suppress(FileNotFoundError):
        (job_dir / "env.sh").unlink()
