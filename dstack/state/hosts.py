"""The pool's rows: own servers (`hosts`) and the slots of them leased to jobs (`leases`).

A slot is taken in one BEGIN IMMEDIATE transaction that first frees the slots of runs that
ended, so two dstack processes never lease the same slot. The ssh backend's `Pool` turns
these rows into addresses and probed facts; this module knows only the columns."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from dstack.state.db import State
from dstack.state.records import IN_ACTIVE, Record


@dataclass(frozen=True)
class HostRecord(Record):
    JSON = frozenset({"facts"})

    name: str
    host: str
    port: int
    user: str | None
    identity_file: str | None
    slots: int
    facts: dict[str, Any]
    added_at: float


@dataclass(frozen=True)
class Lease(Record):
    """One slot of a host, held by one job of a run."""

    host_name: str
    slot: int
    run_name: str
    workflow: str


def put(state: State, *, host: HostRecord, replace: bool) -> bool:
    """Add the host, or replace the one of its name when ``replace``; False (and nothing
    written) when one of that name is there and ``replace`` is not set."""
    with state.transaction() as c:
        exists = c.execute("SELECT 1 FROM hosts WHERE name = ?", (host.name,)).fetchone()
        if exists and not replace:
            return False
        c.execute(
            "INSERT OR REPLACE INTO hosts (name, host, port, user, identity_file, slots, facts, "
            "added_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                host.name,
                host.host,
                host.port,
                host.user,
                host.identity_file,
                host.slots,
                json.dumps(host.facts),
                host.added_at,
            ),
        )
    return True


def listed(state: State) -> list[HostRecord]:
    """Every host, by name."""
    rows = state.conn.execute("SELECT * FROM hosts ORDER BY name").fetchall()
    return [HostRecord.from_row(r) for r in rows]


def get(state: State, *, name: str) -> HostRecord | None:
    row = state.conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
    return HostRecord.from_row(row) if row else None


def remove(state: State, *, name: str) -> Lease | None:
    """Remove the host unless a job holds one of its slots: then that job's lease, and the
    host stays. Checked and removed in one transaction, so no job claims it in between."""
    with state.transaction() as c:
        busy = c.execute("SELECT * FROM leases WHERE host_name = ?", (name,)).fetchone()
        if busy:
            return Lease.from_row(busy)
        c.execute("DELETE FROM hosts WHERE name = ?", (name,))
    return None


def claim_slot(
    state: State, *, host_name: str, slots: int, run_name: str, workflow: str
) -> Lease | None:
    """Take the lowest free one of the host's ``slots`` for the job; None when all are taken."""
    with state.transaction() as c:
        c.execute(  # leases of runs that ended (or vanished) free their slots
            "DELETE FROM leases WHERE run_name NOT IN "
            f"(SELECT name FROM runs WHERE status {IN_ACTIVE})"
        )
        used = {
            r[0] for r in c.execute("SELECT slot FROM leases WHERE host_name = ?", (host_name,))
        }
        slot = next((i for i in range(slots) if i not in used), None)
        if slot is None:
            return None
        c.execute(
            "INSERT INTO leases (host_name, slot, run_name, workflow, since) VALUES (?,?,?,?,?)",
            (host_name, slot, run_name, workflow, time.time()),
        )
    return Lease(host_name, slot, run_name, workflow)


def release(state: State, *, run_name: str, workflow: str) -> None:
    """Free the slot the job holds (nothing when it holds none)."""
    with state.transaction() as c:
        c.execute("DELETE FROM leases WHERE run_name = ? AND workflow = ?", (run_name, workflow))


def leases(state: State) -> list[Lease]:
    rows = state.conn.execute("SELECT * FROM leases").fetchall()
    return [Lease.from_row(r) for r in rows]
