"""Jobs on cloud hosts: which jobs of a run need one, recording and previewing their stacks
before anything exists, creating a job's host when it starts, and reaching it over SSH.

The host then runs the job through the same SSH executor as the pool's servers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from dstack.backends.ledger import Ledger, StackRecord
from dstack.backends.offers import OWN, Offer
from dstack.backends.preview import PlannedResource
from dstack.config import CloudLimits, cloud_limits
from dstack.execution.base import Executor
from dstack.home import Home
from dstack.spec.jobspec import JobSpec
from dstack.ssh.connect import HostError
from dstack.state.db import State
from dstack.storage.store import Store
from stacks.spec import HostSpec


@dataclass(frozen=True)
class CloudJob:
    spec: JobSpec
    offer: Offer
    limits: CloudLimits


def offer_choices(
    home: Home, state: State, specs: list[JobSpec], placement: dict[str, Any]
) -> list[tuple[JobSpec, Offer]]:
    """Each job's cheapest allowed offer: this machine and the pool first (price 0), then the
    clouds of config.yaml; an error naming, per host and cloud, why when none fits."""
    from dstack.backends.catalog import CLOUDS, load_catalog
    from dstack.backends.offers import catalog_offers, choose, own_offers
    from dstack.runner.placement import candidates

    backend = placement.get("backend")
    limits = {c: v for c, v in cloud_limits(home).items() if backend in (None, c)}
    if placement.get("host"):
        limits = {}
    gpus = any(s.resources.gpu and s.resources.gpu.count for s in specs)
    own = []
    if backend in (None, *OWN):
        own = own_offers(candidates(home, state, placement, with_gpus=gpus))
    clouds = catalog_offers(load_catalog(), [c for c in CLOUDS if c in limits])
    return [(spec, choose(spec.resources, own + clouds, limits, spec.name)) for spec in specs]


def clouds_allowed(home: Home, placement: dict[str, Any]) -> bool:
    """Whether a run may use a cloud: one is set up, and the run is not pinned to this machine
    or the pool."""
    backend = placement.get("backend")
    wanted = [c for c in cloud_limits(home) if backend in (None, c)]
    return bool(wanted) and not placement.get("host")


def cloud_jobs(
    home: Home, state: State, specs: list[JobSpec], placement: dict[str, Any]
) -> list[CloudJob]:
    """The jobs that need a cloud host (none, and no catalog read, when no cloud may be used)."""
    if not clouds_allowed(home, placement):
        return []
    limits = cloud_limits(home)
    return [
        CloudJob(spec, offer, limits[offer.backend])
        for spec, offer in offer_choices(home, state, specs, placement)
        if offer.backend not in OWN
    ]


def record_stacks(home: Home, state: State, run: str, jobs: list[CloudJob]) -> list[HostSpec]:
    """Each cloud job's stack in SQLite first (so no later failure can hide it), then in
    Pulumi's state; the caller's address and the run's key are filled in here."""
    from dstack.backends.access import caller_cidr, run_key
    from dstack.backends.automation import open_stack
    from dstack.backends.hosts import host_spec
    from dstack.tags import who

    _, public_key = run_key(home, run)
    specs = []
    for job in jobs:
        spec = host_spec(
            job.offer,
            run,
            job.spec.name,
            who(),
            job.spec.resources,
            job.limits,
            allowed_cidr=caller_cidr(job.limits),
            ssh_public_key=public_key,
        )
        Ledger(state).record(spec.name, run, job.spec.name, asdict(spec), offer_json(job.offer))
        open_stack(home, spec)
        specs.append(spec)
    return specs


def preview_stacks(home: Home, specs: list[HostSpec], notes: Any) -> list[list[PlannedResource]]:
    """The engine's preview of each recorded stack (installing a missing plug-in first)."""
    from dstack.backends.automation import ensure_plugin, open_stack, preview

    previews = []
    for spec in specs:
        stack = open_stack(home, spec)
        ensure_plugin(stack, spec.backend, notes)
        previews.append(preview(stack, {spec.ssh_public_key: "<this run's key>"}))
    return previews


def offer_json(offer: Offer) -> dict[str, Any]:
    gpus = offer.resources.gpus
    return {
        "backend": offer.backend,
        "name": offer.name,
        "region": offer.region,
        "gpus": f"{len(gpus)}x {gpus[0].name}" if gpus else "",
        "spot": offer.spot,
        "price": offer.price,
    }


# when the job starts ----------------------------------------------------------------------


def provision(home: Home, store: Store, record: StackRecord, notes: Any) -> Executor:
    """Create the claimed stack's host and connect to it (run in a thread: it opens its own
    connection to the state database)."""
    from dstack.backends.automation import ensure_plugin, open_stack, up

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
        boot_timeout = cloud_limits(home).get(record.backend, CloudLimits()).boot_timeout
        facts = _first_contact(home, state, record.name, boot_timeout)
        ledger.update(record.name, outputs={**asdict(outputs), "facts": facts.to_dict()})
        return cloud_executor(home, store, state, record.name, patient=True)
    finally:
        state.close()


def host_address(home: Home, state: State, name: str) -> Any:
    """How to reach the cloud host of stack ``name``."""
    return _address(home, name, Ledger(state).get(name))


def _address(home: Home, name: str, record: StackRecord | None) -> Any:
    from dstack.backends.access import run_key
    from dstack.ssh.connect import HostAddress

    if record is None or not record.outputs:
        raise HostError(f"The cloud host {name} is gone (its stack was destroyed).")
    key, _ = run_key(home, record.run_name)
    return HostAddress(name, record.outputs["address"], 22, record.outputs["ssh_user"], str(key))


def _first_contact(home: Home, state: State, name: str, timeout: float) -> Any:
    """Wait for the new host's sshd, pin its host key (trust on first use: the VM is ours and
    seconds old), and probe what it has. A host silent for ``timeout`` seconds is given up."""
    from dstack.backends.access import known_hosts
    from dstack.ssh.connect import connect
    from dstack.ssh.probe import probe

    address = host_address(home, state, name)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(
                address, known_hosts(home, name), pin=True, timeout=min(10, timeout)
            ) as conn:
                return probe(conn)
        except HostError as e:
            if time.monotonic() > deadline:
                raise HostError(
                    f"The new host {name} did not answer SSH within {timeout:g} s ({e.message})",
                    hint="a slow image may need a longer boot_timeout in config.yaml",
                ) from None
            time.sleep(2)


def cloud_executor(
    home: Home, store: Store, state: State, name: str, patient: bool = True
) -> Executor:
    """The SSH executor of the cloud host of stack ``name``."""
    from dstack.backends.access import known_hosts
    from dstack.execution.ssh import SSHExecutor
    from dstack.pool import PoolHost
    from dstack.ssh.probe import HostFacts

    record = Ledger(state).get(name)
    address = _address(home, name, record)
    if record is None or not record.outputs or "facts" not in record.outputs:
        raise HostError(f"The cloud host {name} was never reached over SSH.")
    facts = HostFacts.from_dict(record.outputs["facts"])
    host = PoolHost(address, 1, facts, record.created_at)
    executor = SSHExecutor(
        host, store, known_hosts(home, name), home.runs_dir, retry_for=60.0 if patient else 3.0
    )
    executor.backend = record.backend
    return executor
