"""The pool of own servers: hosts added over SSH, their probed resources, and host slots leased
to jobs so that two runs never share a slot, even from two dstack processes at once."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstack.errors import NotFoundError, RunStateError
from dstack.home import Home
from dstack.ssh.connect import HostAddress
from dstack.ssh.probe import HostFacts
from dstack.state.db import State
from dstack.state.records import IN_ACTIVE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolHost:
    address: HostAddress
    slots: int
    facts: HostFacts
    added_at: float

    @property
    def name(self) -> str:
        return self.address.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.address.host,
            "port": self.address.port,
            "user": self.address.user,
            "identity_file": self.address.identity_file,
            "slots": self.slots,
            "added_at": self.added_at,
            **self.facts.to_dict(),
        }


@dataclass(frozen=True)
class Lease:
    host_name: str
    slot: int
    run_name: str
    workflow: str


class Pool:
    def __init__(self, state: State) -> None:
        self.state = state

    def add(self, address: HostAddress, facts: HostFacts, slots: int, replace: bool) -> None:
        with self.state.transaction() as c:
            exists = c.execute("SELECT 1 FROM hosts WHERE name = ?", (address.name,)).fetchone()
            if exists and not replace:
                raise RunStateError(
                    f"'{address.name}' is already in the pool.",
                    hint="remove it first (dstack pool remove NAME), or add --repin "
                    "to re-pin its host key and probe it again",
                )
            c.execute(
                "INSERT OR REPLACE INTO hosts (name, host, port, user, identity_file, slots, facts, "
                "added_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    address.name,
                    address.host,
                    address.port,
                    address.user,
                    address.identity_file,
                    slots,
                    json.dumps(facts.to_dict()),
                    time.time(),
                ),
            )

    def hosts(self) -> list[PoolHost]:
        rows = self.state.conn.execute("SELECT * FROM hosts ORDER BY name").fetchall()
        return [
            PoolHost(
                HostAddress(r["name"], r["host"], r["port"], r["user"], r["identity_file"]),
                r["slots"],
                HostFacts.from_dict(json.loads(r["facts"])),
                r["added_at"],
            )
            for r in rows
        ]

    def host(self, name: str) -> PoolHost:
        for host in self.hosts():
            if host.name == name:
                return host
        from dstack.spec.suggest import did_you_mean

        names = [h.name for h in self.hosts()]
        raise NotFoundError(
            f"No host named '{name}' in the pool.",
            hint=did_you_mean(name, names) or "see `dstack pool list`",
        )

    def remove(self, name: str) -> None:
        self.host(name)
        with self.state.transaction() as c:
            busy = c.execute("SELECT run_name FROM leases WHERE host_name = ?", (name,)).fetchone()
            if busy:
                raise RunStateError(
                    f"'{name}' is running a job of run {busy[0]}.",
                    hint=f"stop it first: dstack stop {busy[0]}",
                )
            c.execute("DELETE FROM hosts WHERE name = ?", (name,))

    def claim(self, host: PoolHost, run_name: str, workflow: str) -> Lease | None:
        """Take a free slot of the host atomically; None when all are taken."""
        with self.state.transaction() as c:
            c.execute(  # leases of runs that ended (or vanished) free their slots
                f"DELETE FROM leases WHERE run_name NOT IN (SELECT name FROM runs WHERE status {IN_ACTIVE})"
            )
            used = {
                r[0] for r in c.execute("SELECT slot FROM leases WHERE host_name = ?", (host.name,))
            }
            slot = next((i for i in range(host.slots) if i not in used), None)
            if slot is None:
                return None
            c.execute(
                "INSERT INTO leases (host_name, slot, run_name, workflow, since) VALUES (?,?,?,?,?)",
                (host.name, slot, run_name, workflow, time.time()),
            )
        return Lease(host.name, slot, run_name, workflow)

    def release(self, run_name: str, workflow: str) -> None:
        with self.state.transaction() as c:
            c.execute(
                "DELETE FROM leases WHERE run_name = ? AND workflow = ?", (run_name, workflow)
            )

    def leases(self) -> list[Lease]:
        rows = self.state.conn.execute("SELECT * FROM leases").fetchall()
        return [Lease(r["host_name"], r["slot"], r["run_name"], r["workflow"]) for r in rows]


def add_host(
    home: Home, state: State, address: HostAddress, slots: int, replace: bool, repin: bool
) -> str:
    """Connect (pinning the host key on first contact), probe, record; returns the key's fingerprint."""
    from dstack.ssh.connect import connect, forget_host_key
    from dstack.ssh.probe import probe

    known_hosts = home.root / "known_hosts"
    if repin:
        forget_host_key(known_hosts, address)
    with connect(address, known_hosts, pin=True) as conn:
        facts = probe(conn)
        fingerprint = conn.client.get_transport().get_remote_server_key().fingerprint  # type: ignore[union-attr]
    Pool(state).add(address, facts, slots, replace=replace or repin)
    return str(fingerprint)


def sync_config_hosts(home: Home, state: State) -> None:
    """Hosts listed in config.yaml join the pool on first use, pinned and probed like `pool add`.
    One that cannot be reached now is left out with a warning and tried again next time: the
    other hosts stay usable."""
    from dstack.config import ssh_settings
    from dstack.ssh.connect import HostError

    pool = {h.name: h for h in Pool(state).hosts()}
    for item in ssh_settings(home).hosts:
        key = str(Path(item.identity_file).expanduser()) if item.identity_file else None
        address = HostAddress(item.name, item.host, item.port, item.user, key)
        have = pool.get(item.name)
        if have is None or have.address != address or have.slots != item.slots:
            try:
                add_host(home, state, address, item.slots, replace=have is not None, repin=False)
            except HostError as e:
                log.warning("host %s from config.yaml was not added: %s", item.name, e.message)
