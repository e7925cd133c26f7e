"""The rows of the cloud stacks dstack made (`stacks`): written before anything exists in a
cloud and deleted only once the stack is destroyed, so a crash at any step leaves a row.

Statuses: ``planned`` (recorded, nothing created), ``creating`` (up under way), ``up``,
``destroying``, ``leaked`` (a teardown failed; gc tries again). Every status but ``planned``
holds one of its backend's ``max_instances`` places, counted in the same BEGIN IMMEDIATE
transaction that takes one, so concurrent dstack processes never exceed it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dstack.state.db import UNSET, State, Unset
from dstack.state.records import IN_ACTIVE, Record

HOLDING = ("creating", "up", "destroying", "leaked")


@dataclass(frozen=True)
class StackRecord(Record):
    JSON = frozenset({"spec", "offer"})

    name: str
    run_name: str
    workflow: str
    backend: str
    status: str
    spec: dict[str, Any]
    offer: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    created_at: float

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        outputs = values["outputs"]  # NULL until the stack is up
        return values | {"outputs": json.loads(outputs) if outputs else None}


def record(
    state: State,
    *,
    name: str,
    run_name: str,
    workflow: str,
    backend: str,
    spec: Mapping[str, Any],
    offer: Mapping[str, Any],
) -> None:
    """Write a ``planned`` stack."""
    now = time.time()
    with state.transaction() as c:
        c.execute(
            "INSERT INTO stacks (name, run_name, workflow, backend, status, spec, offer, "
            "created_at, updated_at) VALUES (?,?,?,?,'planned',?,?,?,?)",
            (name, run_name, workflow, backend, json.dumps(spec), json.dumps(offer), now, now),
        )


def claim(state: State, *, name: str, max_instances: int) -> bool:
    """Move a planned stack to ``creating`` if its backend holds fewer than ``max_instances``
    places. True when it holds one now (or was past ``planned`` already), False when the
    backend is full or the stack is unknown."""
    with state.transaction() as c:
        row = c.execute("SELECT backend, status FROM stacks WHERE name = ?", (name,)).fetchone()
        if row is None or row["status"] != "planned":
            return row is not None
        held = c.execute(
            f"SELECT COUNT(*) FROM stacks WHERE backend = ? AND status IN {HOLDING}",
            (row["backend"],),
        ).fetchone()[0]
        if held >= max_instances:
            return False
        c.execute(
            "UPDATE stacks SET status = 'creating', updated_at = ? WHERE name = ?",
            (time.time(), name),
        )
    return True


def update(
    state: State,
    *,
    name: str,
    status: str | Unset = UNSET,
    outputs: Mapping[str, Any] | None | Unset = UNSET,
    error: str | None | Unset = UNSET,
) -> None:
    """Set the given columns of a stack (those left out keep their values). One fixed
    statement: each column is either set from its parameter or left as it is."""
    stored = outputs if isinstance(outputs, Unset) or outputs is None else json.dumps(dict(outputs))
    values = (status, stored, error)
    if all(isinstance(v, Unset) for v in values):
        raise TypeError("nothing to update in stacks")
    params = [p for v in values for p in _case(v)]
    with state.transaction() as c:
        c.execute(
            "UPDATE stacks SET status = CASE WHEN ? THEN ? ELSE status END, "
            "outputs = CASE WHEN ? THEN ? ELSE outputs END, "
            "error = CASE WHEN ? THEN ? ELSE error END, updated_at = ? WHERE name = ?",
            (*params, time.time(), name),
        )


def _case(value: object) -> tuple[bool, object]:
    """The parameters of ``CASE WHEN ? THEN ? ELSE column END``: whether to set, and to what."""
    return (False, None) if isinstance(value, Unset) else (True, value)


def forget(state: State, *, name: str) -> None:
    """Delete the stack's row: only once it is destroyed."""
    with state.transaction() as c:
        c.execute("DELETE FROM stacks WHERE name = ?", (name,))


def get(state: State, *, name: str) -> StackRecord | None:
    row = state.conn.execute("SELECT * FROM stacks WHERE name = ?", (name,)).fetchone()
    return StackRecord.from_row(row) if row else None


def of_job(state: State, *, run_name: str, workflow: str) -> StackRecord | None:
    row = state.conn.execute(
        "SELECT * FROM stacks WHERE run_name = ? AND workflow = ?", (run_name, workflow)
    ).fetchone()
    return StackRecord.from_row(row) if row else None


def left_behind(state: State) -> list[StackRecord]:
    """Stacks whose run has ended or is gone, oldest first."""
    rows = state.conn.execute(
        "SELECT * FROM stacks WHERE run_name NOT IN "
        f"(SELECT name FROM runs WHERE status {IN_ACTIVE}) ORDER BY created_at"
    ).fetchall()
    return [StackRecord.from_row(r) for r in rows]


def listed(state: State, *, run_name: str | None = None) -> list[StackRecord]:
    """Every stack, or the run's, oldest first."""
    if run_name is None:
        rows = state.conn.execute("SELECT * FROM stacks ORDER BY created_at").fetchall()
    else:
        rows = state.conn.execute(
            "SELECT * FROM stacks WHERE run_name = ? ORDER BY created_at", (run_name,)
        ).fetchall()
    return [StackRecord.from_row(r) for r in rows]
