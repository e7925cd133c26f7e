"""The stacks dstack made, in SQLite: recorded before anything exists in a cloud and removed
only once the stack is destroyed, so a crash at any step leaves a row that `dstack gc` finds.

Statuses: ``planned`` (recorded, nothing created), ``creating`` (up under way), ``up``,
``destroying``, ``leaked`` (a teardown failed; gc tries again). Every status but ``planned``
holds one of its backend's ``max_instances`` places, counted in one transaction so that
concurrent dstack processes never exceed it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from dstack.state.db import State
from dstack.state.records import IN_ACTIVE

HOLDING = ("creating", "up", "destroying", "leaked")


@dataclass(frozen=True)
class StackRecord:
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


class Ledger:
    def __init__(self, state: State) -> None:
        self.state = state

    def record(
        self, name: str, run: str, workflow: str, spec: dict[str, Any], offer: dict[str, Any]
    ) -> None:
        now = time.time()
        with self.state.transaction() as c:
            c.execute(
                "INSERT INTO stacks (name, run_name, workflow, backend, status, spec, offer, "
                "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    run,
                    workflow,
                    spec["backend"],
                    "planned",
                    json.dumps(spec),
                    json.dumps(offer),
                    now,
                    now,
                ),
            )

    def claim(self, name: str, max_instances: int) -> bool:
        """Move a planned stack to ``creating`` if its backend has a free place."""
        with self.state.transaction() as c:
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

    def update(self, name: str, **fields: Any) -> None:
        values = [json.dumps(v) if k == "outputs" else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.state.transaction() as c:
            c.execute(
                f"UPDATE stacks SET {sets}, updated_at = ? WHERE name = ?",
                (*values, time.time(), name),
            )

    def forget(self, name: str) -> None:
        with self.state.transaction() as c:
            c.execute("DELETE FROM stacks WHERE name = ?", (name,))

    def get(self, name: str) -> StackRecord | None:
        row = self.state.conn.execute("SELECT * FROM stacks WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def of_job(self, run: str, workflow: str) -> StackRecord | None:
        row = self.state.conn.execute(
            "SELECT * FROM stacks WHERE run_name = ? AND workflow = ?", (run, workflow)
        ).fetchone()
        return _record(row) if row else None

    def left_behind(self) -> list[StackRecord]:
        """Stacks whose run has ended or is gone: what `dstack gc` tears down."""
        rows = self.state.conn.execute(
            "SELECT * FROM stacks WHERE run_name NOT IN "
            f"(SELECT name FROM runs WHERE status {IN_ACTIVE}) ORDER BY created_at"
        ).fetchall()
        return [_record(r) for r in rows]

    def all(self, run: str | None = None) -> list[StackRecord]:
        if run is None:
            rows = self.state.conn.execute("SELECT * FROM stacks ORDER BY created_at").fetchall()
        else:
            rows = self.state.conn.execute(
                "SELECT * FROM stacks WHERE run_name = ? ORDER BY created_at", (run,)
            ).fetchall()
        return [_record(r) for r in rows]


def _record(row: Any) -> StackRecord:
    return StackRecord(
        row["name"],
        row["run_name"],
        row["workflow"],
        row["backend"],
        row["status"],
        json.loads(row["spec"]),
        json.loads(row["offer"]),
        json.loads(row["outputs"]) if row["outputs"] else None,
        row["error"],
        row["created_at"],
    )
