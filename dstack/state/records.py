"""Plain records read from the state database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

FINAL = ("done", "failed", "stopped")
ACTIVE = ("submitted", "running")


@dataclass(frozen=True)
class RunRecord:
    name: str
    workflow: str
    status: str
    created_at: float
    finished_at: float | None
    repo_dir: str
    args: list[str]
    variables: dict[str, Any]
    tag: str | None
    supervisor_pid: int | None
    supervisor_start: int | None
    stop_request: str | None
    exit_code: int | None
    detached: bool
    snapshot: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(
            name=row["name"],
            workflow=row["workflow"],
            status=row["status"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            repo_dir=row["repo_dir"],
            args=json.loads(row["args"]),
            variables=json.loads(row["variables"]),
            tag=row["tag"],
            supervisor_pid=row["supervisor_pid"],
            supervisor_start=row["supervisor_start"],
            stop_request=row["stop_request"],
            exit_code=row["exit_code"],
            detached=bool(row["detached"]),
            snapshot=json.loads(row["snapshot"]),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class JobRecord:
    run_name: str
    workflow: str
    position: int
    status: str
    spec: dict[str, Any]
    upstream: list[str]
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    pid: int | None
    pid_start: int | None
    job_dir: str | None
    cache_key: str | None
    reused_from: str | None
    manifest: str | None
    error: str | None
    record: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        return cls(
            run_name=row["run_name"],
            workflow=row["workflow"],
            position=row["position"],
            status=row["status"],
            spec=json.loads(row["spec"]),
            upstream=json.loads(row["upstream"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            exit_code=row["exit_code"],
            pid=row["pid"],
            pid_start=row["pid_start"],
            job_dir=row["job_dir"],
            cache_key=row["cache_key"],
            reused_from=row["reused_from"],
            manifest=row["manifest"],
            error=row["error"],
            record=json.loads(row["record"]),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class TagRecord:
    name: str
    run_name: str
    created_at: float
    manifests: dict[str, str]
