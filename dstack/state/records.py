"""Typed rows of the state database: what goes in (`NewJob`) and what comes out (`RunRecord`,
`JobRecord`); JSON columns are decoded on the way in, so callers never parse them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:  # imported where first used: `dstack --help` opens no state
    from dstack.offer import Offer, Scope
    from dstack.spec.jobspec import JobSpec

FINAL = ("done", "failed", "stopped")
ACTIVE = ("submitted", "waiting", "running")
IN_ACTIVE = "IN (" + ", ".join(f"'{s}'" for s in ACTIVE) + ")"

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class NewJob:
    """One job of a run being created. ``spec`` is the validated workflow as JSON (stored as
    it is: cache keys hash it); ``placement`` is where it was decided to run, best first."""

    workflow: str
    spec: dict[str, Any]
    upstream: Sequence[str] = ()
    placement: Sequence[Offer] = ()


class Record:
    """Builds a frozen dataclass from a row whose column names match its fields."""

    JSON: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_row(cls: type[R], row: sqlite3.Row) -> R:
        values = {f.name: row[f.name] for f in fields(cls)}  # type: ignore[arg-type]
        values |= {name: json.loads(values[name]) for name in cls.JSON}
        return cls(**cls.typed(values))

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn decoded JSON into the field's own type where it has one."""
        return values


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
    placement: Scope  # what the run allows placement to use (--backend, --host, --no-wait)

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        from dstack.offer import Scope

        return values | {"placement": Scope.from_dict(values["placement"])}

    @property
    def finished(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class JobRecord(Record):
    JSON = frozenset({"spec", "upstream", "record", "placement"})

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
    placement: tuple[Offer, ...]

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        from dstack.offer import Offer

        return values | {"placement": tuple(Offer.from_dict(o) for o in values["placement"])}

    @property
    def backend(self) -> str | None:
        """The backend the job was started on (None: not started, or recorded before backends)."""
        value = self.record.get("backend")
        return str(value) if value else None

    @property
    def host(self) -> str | None:
        """The host it was started on, as its backend names it."""
        value = self.record.get("host")
        return str(value) if value else None

    @property
    def agent(self) -> bool:
        """Whether an agent on its host saves its log and artifacts to the store."""
        return self.record.get("saver") == "agent"

    @property
    def ports(self) -> list[int]:
        """The host's ports given to the job ($PORT_0...)."""
        return [int(p) for p in self.record.get("ports") or []]

    @cached_property
    def job_spec(self) -> JobSpec:
        """The stored workflow as a `JobSpec` (built on first use, then kept)."""
        from dstack.spec.jobspec import JobSpec

        return JobSpec.from_dict(self.spec)

    @property
    def finished(self) -> bool:
        return self.status in FINAL
