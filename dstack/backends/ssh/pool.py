"""The pool of own servers: hosts added over SSH, their probed resources, and host slots leased
to jobs so that two runs never share a slot, even from two dstack processes at once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstack.errors import NotFoundError, RunStateError
from dstack.home import Home
from dstack.ssh.connect import HostAddress
from dstack.ssh.probe import HostFacts
from dstack.state import hosts as host_rows
from dstack.state.db import State

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
class ConfigHost:
    """An own server listed under `backends.ssh.hosts` (validated by backends.ssh.settings)."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    slots: int = 1


class Pool:
    """The pool's hosts as addresses and probed facts; its rows live in `dstack.state.hosts`."""

    def __init__(self, state: State) -> None:
        self.state = state

    def add(self, address: HostAddress, facts: HostFacts, slots: int, replace: bool) -> None:
        row = host_rows.HostRecord(
            name=address.name,
            host=address.host,
            port=address.port,
            user=address.user,
            identity_file=address.identity_file,
            slots=slots,
            facts=facts.to_dict(),
            added_at=time.time(),
        )
        if not host_rows.put(self.state, host=row, replace=replace):
            raise RunStateError(
                f"'{address.name}' is already in the pool.",
                hint="remove it first (dstack pool remove NAME), or add --repin "
                "to re-pin its host key and probe it again",
            )

    def hosts(self) -> list[PoolHost]:
        return [_pool_host(row) for row in host_rows.listed(self.state)]

    def host(self, name: str) -> PoolHost:
        row = host_rows.get(self.state, name=name)
        if row is not None:
            return _pool_host(row)
        from dstack.spec.suggest import did_you_mean

        names = [h.name for h in host_rows.listed(self.state)]
        raise NotFoundError(
            f"No host named '{name}' in the pool.",
            hint=did_you_mean(name, names) or "see `dstack pool list`",
        )

    def remove(self, name: str) -> None:
        self.host(name)
        busy = host_rows.remove(self.state, name=name)
        if busy is not None:
            raise RunStateError(
                f"'{name}' is running a job of run {busy.run_name}.",
                hint=f"stop it first: dstack stop {busy.run_name}",
            )

    def claim(self, host: PoolHost, run_name: str, workflow: str) -> host_rows.Lease | None:
        """Take a free slot of the host atomically; None when all are taken."""
        return host_rows.claim_slot(
            self.state, host_name=host.name, slots=host.slots, run_name=run_name, workflow=workflow
        )

    def release(self, run_name: str, workflow: str) -> None:
        host_rows.release(self.state, run_name=run_name, workflow=workflow)

    def leases(self) -> list[host_rows.Lease]:
        return host_rows.leases(self.state)


def _pool_host(row: host_rows.HostRecord) -> PoolHost:
    address = HostAddress(row.name, row.host, row.port, row.user, row.identity_file)
    return PoolHost(address, row.slots, HostFacts.from_dict(row.facts), row.added_at)


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
        fingerprint = conn.transport.get_remote_server_key().fingerprint
    Pool(state).add(address, facts, slots, replace=replace or repin)
    return str(fingerprint)


def config_hosts(home: Home) -> list[ConfigHost]:
    """The servers listed under `backends.ssh.hosts`, which join the pool on first use."""
    from dstack.config import backend_section

    section = backend_section(home, "ssh") or {}
    return [ConfigHost(**h) for h in section.get("hosts", [])]


def sync_config_hosts(home: Home, state: State) -> None:
    """Hosts listed in config.yaml join the pool on first use, pinned and probed like `pool add`.
    One that cannot be reached now is left out with a warning and tried again next time: the
    other hosts stay usable."""
    from dstack.ssh.connect import HostError

    pool = {h.name: h for h in Pool(state).hosts()}
    for item in config_hosts(home):
        key = str(Path(item.identity_file).expanduser()) if item.identity_file else None
        address = HostAddress(item.name, item.host, item.port, item.user, key)
        have = pool.get(item.name)
        if have is None or have.address != address or have.slots != item.slots:
            try:
                add_host(home, state, address, item.slots, replace=have is not None, repin=False)
            except HostError as e:
                log.warning("host %s from config.yaml was not added: %s", item.name, e.message)
