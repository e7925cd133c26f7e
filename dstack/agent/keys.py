"""Where the agent puts a job's log and status in the store (the laptop and teammates read
them there): `jobs/RUN/JOB/status.json` and `jobs/RUN/JOB/log/NNNNNNNNNNNN`, the log in
parts of at most a mebibyte, numbered from 0, that together are the job's whole log; and
where any home asks the agent to stop the job: `jobs/RUN/JOB/stop` (the agent reads it)."""

from __future__ import annotations

LOG_PART_DIGITS = 12


def job_prefix(run: str, job: str) -> str:
    return f"jobs/{run}/{job}/"


def status_key(run: str, job: str) -> str:
    return f"{job_prefix(run, job)}status.json"


def log_part_key(run: str, job: str, part: int) -> str:
    return f"{job_prefix(run, job)}log/{part:0{LOG_PART_DIGITS}d}"


def log_prefix(run: str, job: str) -> str:
    return f"{job_prefix(run, job)}log/"


def stop_key(run: str, job: str) -> str:
    return f"{job_prefix(run, job)}stop"
