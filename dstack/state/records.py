"""Plain records read from the state database; JSON columns are decoded on the way in."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

FINAL = ("done", "failed", "stopped")
ACTIVE = ("submitted", "waiting", "running")
IN_ACTIVE = "IN (" + ", ".join(f"'{s}'" for s in ACTIVE) + ")"

R = TypeVar("R", bound="Record")


class Record:
    """Builds a frozen dataclass from a row whose column names match its fields."""

    JSON: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_row(cls: type[R], row: sqlite3.Row) -> R:
        values = {f.name: row[f.name] for f in fields(cls)}  # type: ignore[arg-type]
        values |= {name: json.loads(values[name]) for name in cls.JSON}
        return cls(**values)


@dataclass(frozen=True)
class RunRecord(Record):
    JSON = frozenset({"args", "variables", "snapshot", "placement"})

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
    detached: int
    snapshot: dict[str, Any]
    placement: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class JobRecord(Record):
    JSON = frozenset({"spec", "upstream", "record"})

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

    @property
    def finished(self) -> bool:
        return self.status in FINAL
