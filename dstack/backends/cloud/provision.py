"""Jobs on cloud hosts: creating a job's host when it starts (its stack was recorded and
previewed before, by dstack.backends.cloud.planning), and reaching it over SSH.

The host is a CloudHost (its stack's outputs and the facts probed at first contact); it runs
the job through the same SSH executor as the pool's servers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dstack.backends.base import Notes
from dstack.backends.cloud.ledger import Ledger, StackRecord
from dstack.execution.base import Executor
from dstack.home import Home
from dstack.ssh.connect import HostAddress, HostError
from dstack.ssh.probe import HostFacts
from dstack.state.db import State
from dstack.storage.store import Store
from stacks.spec import HostSpec


@dataclass(frozen=True)
class CloudHost:
    """A VM created for one job: reached at its stack's address with the run's own key."""

    address: HostAddress
    facts: HostFacts
    stack: str

    @property
    def name(self) -> str:
        return self.address.name


def provision(
    home: Home, store: Store, record: StackRecord, notes: Notes, boot_timeout: float
) -> Executor:
    """Create the claimed stack's host and connect to it (run in a thread: it opens its own
    connection to the state database)."""
    from dstack.backends.cloud.automation import ensure_plugin, open_stack, up

    state = State(home)
    try:
        spec = HostSpec.from_dict(record.spec)
        stack = open_stack(home, spec)
        ensure_plugin(stack, spec.backend, notes)
        offer = record.offer
        notes(
            f"creating {record.name}: {offer['backend']} {offer['name']} in {offer['region']}"
            + (", spot" if offer["spot"] else "")
            + f", ${offer['price']:g}/h"
        )
        outputs = up(stack, notes)
        ledger = Ledger(state)
        ledger.update(record.name, status="up", outputs=asdict(outputs))
        notes(f"{record.name} is up at {outputs.address}; waiting for SSH")
        facts = _first_contact(home, state, record.name, boot_timeout)
        ledger.update(record.name, outputs={**asdict(outputs), "facts": facts.to_dict()})
        return cloud_executor(home, store, state, record.name, patient=True)
    finally:
        state.close()


def host_address(home: Home, state: State, name: str) -> HostAddress:
    """How to reach the cloud host of stack ``name``."""
    return _address(home, name, Ledger(state).get(name))


def _address(home: Home, name: str, record: StackRecord | None) -> HostAddress:
    from dstack.backends.cloud.access import run_key

    if record is None or not record.outputs:
        raise HostError(f"The cloud host {name} is gone (its stack was destroyed).")
    key, _ = run_key(home, record.run_name)
    return HostAddress(name, record.outputs["address"], 22, record.outputs["ssh_user"], str(key))


def _first_contact(home: Home, state: State, name: str, timeout: float) -> HostFacts:
    """Wait for the new host's sshd, pin its host key (trust on first use: the VM is ours and
    seconds old), and probe what it has. A host silent for ``timeout`` seconds is given up."""
    from dstack.backends.cloud.access import known_hosts
    from dstack.retry import retry
    from dstack.ssh.connect import connect
    from dstack.ssh.probe import probe

    address = host_address(home, state, name)

    def probe_once() -> HostFacts:
        with connect(address, known_hosts(home, name), pin=True, timeout=min(10, timeout)) as conn:
            return probe(conn)

    try:
        return retry(
            probe_once, retry_on=lambda e: isinstance(e, HostError), wait=2, give_up_after=timeout
        )
    except HostError as e:
        raise HostError(
            f"The new host {name} did not answer SSH within {timeout:g} s ({e.message})",
            hint="a slow image may need a longer boot_timeout in config.yaml",
        ) from None


def cloud_executor(
    home: Home, store: Store, state: State, name: str, patient: bool = True
) -> Executor:
    """The SSH executor of the cloud host of stack ``name``."""
    from dstack.backends.cloud.access import known_hosts
    from dstack.execution.ssh import SSHExecutor

    record = Ledger(state).get(name)
    address = _address(home, name, record)
    if record is None or not record.outputs or "facts" not in record.outputs:
        raise HostError(f"The cloud host {name} was never reached over SSH.")
    host = CloudHost(address, HostFacts.from_dict(record.outputs["facts"]), name)
    executor = SSHExecutor(
        host, store, known_hosts(home, name), home, retry_for=60.0 if patient else 3.0
    )
    return executor
