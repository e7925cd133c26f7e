"""What every cloud backend shares: offers from the shipped catalog within the limits of its
section of config.yaml, one VM per job created by an ephemeral Pulumi stack (recorded in the
ledger and previewed for the run's review before anything exists), reached over SSH with the
run's own key, destroyed when the job ends. A cloud's folder only names itself, its Pulumi
plug-in and its settings."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dstack.backends.base import Backend, Context, Leftover, Unavailable, Waiting
from dstack.offer import Scope

if TYPE_CHECKING:
    from dstack.backends.cloud.ledger import StackRecord
    from dstack.backends.cloud.limits import CloudLimits
    from dstack.backends.cloud.team import TeamStack
    from dstack.backends.plans import HostPlan, PlacedJob, Previewed
    from dstack.execution.base import Executor
    from dstack.offer import Offer
    from dstack.spec.jobspec import ResourcesSpec
    from dstack.ssh.connect import HostAddress
    from dstack.state.records import JobRecord
    from dstack.storage.store import Store

log = logging.getLogger(__name__)


class CloudBackend(Backend):
    plugin: ClassVar[tuple[str, str]]  # the Pulumi plug-in and the SDK module that pins it

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.threads: ThreadPoolExecutor | None = None
        self.creating: dict[str, Future[Executor]] = {}  # hosts being created, by job

    def not_set_up_hint(self) -> str:
        return (
            f"add it under backends, e.g. `backends: {{{self.name}: {{max_price: 2}}}}`; "
            f"`dstack offers --backend {self.name}` lists its catalog"
        )

    def limits(self) -> CloudLimits:
        from dstack.backends.cloud.limits import CloudLimits

        return CloudLimits.from_section(self.section() or {})

    # placement ------------------------------------------------------------------------------

    def catalog(self) -> list[Offer]:
        """Every instance type of the catalog, on demand and spot, whatever the limits."""
        from dstack.backends.cloud.catalog import load_catalog
        from dstack.backends.cloud.limits import catalog_offers

        return catalog_offers(load_catalog(), [self.name])

    def offers(self, scope: Scope, with_gpus: bool) -> list[Offer]:
        if scope.host is not None or scope.backend not in (None, self.name):
            return []
        return self.catalog() if self.enabled() else []

    def allows(self, offer: Offer, interruptible: bool | None) -> bool:
        from dstack.backends.cloud.limits import allowed

        return bool(allowed([offer], {self.name: self.limits()}, interruptible))

    def listing_notes(self) -> list[str]:
        from dstack.backends.cloud.catalog import load_catalog

        snapshot = load_catalog().snapshot
        return [f"Prices: the catalog of {snapshot} (spot prices move hourly)."]

    def why_none(self, want: ResourcesSpec, offers: list[Offer]) -> list[str]:
        from dstack.backends.cloud.limits import why_not

        reasons = why_not(want, offers, {self.name: self.limits()})
        return [f"{self.name}: {reasons[self.name]}"]

    # hosts to create, shown before anything exists (dstack.backends.cloud.planning) ----------

    def check_tools(self) -> None:
        from dstack.backends.cloud.automation import require_cli

        require_cli()

    def plan(self, jobs: list[PlacedJob], offline: bool) -> Previewed:
        from dstack.backends.cloud.planning import plan_hosts

        return plan_hosts(self.ctx.home, jobs, self.limits(), offline)

    def reserve(self, run: str, jobs: list[PlacedJob]) -> list[HostPlan]:
        """Each job's stack is recorded in the ledger, then previewed by the Pulumi engine."""
        from dstack.backends.cloud.planning import reserve_hosts

        ctx = self.ctx
        return reserve_hosts(ctx.home, ctx.state, run, jobs, self.limits(), ctx.notes, ctx.store)

    def withdraw(self, run: str) -> bool:
        """Destroy and forget the run's recorded stacks (none was brought up yet)."""
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.teardown import teardown

        ledger = Ledger(self.ctx.state)
        for stack in ledger.all(run):
            if stack.backend == self.name:
                teardown(self.ctx.home, self.ctx.state, stack.name, self.ctx.notes)
        return all(stack.backend != self.name for stack in ledger.all(run))

    def export(
        self, jobs: list[PlacedJob], folder: Path, allowed_cidr: str, ssh_public_key: str
    ) -> None:
        """A Pulumi project whose stacks are the jobs' hosts (dstack.backends.cloud.export)."""
        from dstack.backends.cloud.planning import export_hosts

        export_hosts(jobs, self.limits(), folder, allowed_cidr, ssh_public_key, self.ctx.notes)

    # a job's life ---------------------------------------------------------------------------

    def acquire(self, job: JobRecord, offer: Offer) -> Executor | Waiting | Unavailable:
        """Create the job's VM in a thread of its own (minutes, during which the other jobs'
        logs and artifacts keep flowing); its executor once it answers over SSH."""
        from dstack.backends.cloud.ledger import Ledger
        from dstack.errors import RunStateError

        creating = self.creating.get(job.workflow)
        if creating is None:
            stack = Ledger(self.ctx.state).of_job(job.run_name, job.workflow)
            if stack is None:
                raise RunStateError(f"The cloud host of job {job.workflow} was never recorded.")
            limits = self.limits()
            if not Ledger(self.ctx.state).claim(stack.name, limits.max_instances):
                return Waiting(
                    f"a free {self.name} instance",
                    f"all {limits.max_instances} of {self.name}'s max_instances in use",
                )
            from dstack.backends.cloud.provision import provision

            if self.threads is None:
                self.threads = ThreadPoolExecutor(thread_name_prefix="provision")
            store = self.ctx.store
            assert store is not None, "hosts are created only where jobs run"
            self.creating[job.workflow] = self.threads.submit(
                provision, self.ctx.home, store, stack, self.ctx.notes, self.limits().boot_timeout
            )
            return Waiting("its cloud host")
        if not creating.done():
            return Waiting("its cloud host")
        del self.creating[job.workflow]
        return creating.result()

    def preparing(self, workflow: str) -> bool:
        creating = self.creating.get(workflow)
        return creating is not None and not creating.done()

    def release(self, job: JobRecord, files_safe: bool, executor: Executor | None) -> None:
        """Destroy the job's VM, if it has one (waits through Ctrl-C), after letting go of
        the connection to it."""
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.teardown import teardown

        if executor is not None:
            executor.close()

        stack = Ledger(self.ctx.state).of_job(job.run_name, job.workflow)
        if stack is not None:
            log.info("%s: tearing down its cloud host %s", job.workflow, stack.name)
            teardown(self.ctx.home, self.ctx.state, stack.name, self.ctx.notes)

    def finish(self, run: str) -> None:
        """Hosts still being created are finished (or failed) before they are destroyed: the
        `pulumi up` under way holds the stack's lock. Ctrl-C cancels it (the engine receives
        it too); waiting goes on through it. Then every stack of the run is destroyed but
        those whose teardown failed before (left to `dstack gc`)."""
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.teardown import teardown

        if self.creating:
            self.ctx.notes("waiting for the cloud hosts being created, to tear them down")
        for future in self.creating.values():
            while True:
                try:
                    wait([future])
                    break
                except KeyboardInterrupt:
                    self.ctx.notes("still waiting for the host being created, then tearing it down")
            if future.exception() is None:
                future.result().close()
        self.creating.clear()
        if self.threads is not None:
            self.threads.shutdown()
        for stack in Ledger(self.ctx.state).all(run):
            if stack.backend == self.name and stack.status != "leaked":
                teardown(self.ctx.home, self.ctx.state, stack.name, self.ctx.notes)

    # reaching a recorded job's host again ----------------------------------------------------

    def executor(self, host: str, patient: bool = True) -> Executor:
        """The host's executor; for a host that another home destroyed once its job had
        ended (dstack.backends.cloud.team), the job as its agent left it in the store."""
        from dstack.backends.cloud.provision import cloud_executor
        from dstack.storage.store import Store

        store = self.ctx.store or Store.open(self.ctx.home)
        gone = self._destroyed_elsewhere(store, host)
        if gone is not None:
            return gone
        return cloud_executor(self.ctx.home, store, self.ctx.state, host, patient)

    def _destroyed_elsewhere(self, store: Store, host: str) -> Executor | None:
        from dstack.backends.cloud import team
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.workspace import shared_store
        from dstack.errors import StoreError

        record = Ledger(self.ctx.state).get(host)
        if record is None or not shared_store(self.ctx.home):
            return None
        try:
            found = team.read(store, host)
        except StoreError as e:  # unknown now: the host is looked for as usual
            log.info("could not read the record of stack %s: %s", host, e.message)
            return None
        if found is None or found.state != "destroyed":
            return None
        from dstack.backends.cloud.gone import GoneHost

        by = f"{found.by_owner or 'another home'}'s dstack"
        return GoneHost(store, host, record.run_name, record.workflow, by)

    def address(self, host: str) -> tuple[HostAddress, Path]:
        from dstack.backends.cloud.access import known_hosts
        from dstack.backends.cloud.provision import host_address

        return host_address(self.ctx.home, self.ctx.state, host), known_hosts(self.ctx.home, host)

    # gc -------------------------------------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        """The stacks whose run is gone or finished, with the reason: this home's, and where
        the store is shared, other homes' whose runs are over (dstack.backends.cloud.team)."""
        from dstack.backends.cloud.ledger import Ledger

        state = self.ctx.state
        shared = _team_stacks(self.ctx)
        tombstones = {r.name: r for r in shared[1] if r.state == "destroyed"} if shared else {}
        found = []
        for stack in Ledger(state).left_behind():
            if stack.backend != self.name:
                continue
            if shared is not None and stack.name in tombstones:
                self._destroyed_by_another(shared[0], tombstones[stack.name], stack)
                continue
            why = (
                f"its run is {state.run(stack.run_name).status}"
                if state.has_run(stack.run_name)
                else "its run was removed"
            )
            found.append(
                Leftover(
                    stack.name,
                    self.name,
                    stack.status,
                    stack.created_at,
                    why + (f"; {stack.error}" if stack.error else ""),
                    stack.run_name,
                    stack.workflow,
                )
            )
        return found + self._teammates_leftovers(shared)

    def _destroyed_by_another(self, store: Store, tombstone: TeamStack, row: StackRecord) -> None:
        """A stack of this home's ended run that another home destroyed: forgotten here now,
        and its tombstone with it."""
        from dstack.backends.cloud import team
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.teardown import forget_stack

        log.info("%s was destroyed by %s's dstack", row.name, tombstone.by_owner)
        forget_stack(self.ctx.home, Ledger(self.ctx.state), row.name, row.run_name)
        team.forget(store, row.name)

    def _teammates_leftovers(self, shared: tuple[Store, list[TeamStack]] | None) -> list[Leftover]:
        from dstack.backends.cloud.hosts import DEADLINE_MINUTES
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.team import why_left

        if shared is None:
            return []
        store, records = shared
        ledger, now, found = Ledger(self.ctx.state), time.time(), []
        for stack in records:
            if stack.backend != self.name or stack.state == "destroyed" or ledger.get(stack.name):
                continue
            why = why_left(store, stack, now, DEADLINE_MINUTES)
            if why is not None:
                status = "destroying" if stack.state == "destroying" else "up"
                found.append(
                    Leftover(
                        stack.name, self.name, status, stack.created_at, why, stack.run, stack.job
                    )
                )
        return found

    def clean(self, item: Leftover) -> bool:
        from dstack.backends.cloud.ledger import Ledger
        from dstack.backends.cloud.teardown import teardown, teardown_team

        if Ledger(self.ctx.state).get(item.name) is None:
            return teardown_team(self.ctx.home, item.name, self.ctx.notes)
        return teardown(self.ctx.home, self.ctx.state, item.name, self.ctx.notes)


_SEEN: dict[str, tuple[float, Store, list[TeamStack]]] = {}
_UNREACHABLE: dict[str, float] = {}  # homes whose store did not answer, and when
SEEN_FOR = 5.0  # seconds one listing of the store's stack records serves every cloud backend


def _team_stacks(ctx: Context) -> tuple[Store, list[TeamStack]] | None:
    """The store and its stack records when the run stacks are shared through it; one
    store client and one listing per command, whichever clouds ask."""
    from dstack.backends.cloud import team
    from dstack.backends.cloud.workspace import shared_store
    from dstack.errors import StoreError
    from dstack.storage.store import Store

    if not shared_store(ctx.home):
        return None
    key = str(ctx.home.root)
    seen = _SEEN.get(key)
    if seen is not None and time.monotonic() - seen[0] < SEEN_FOR:
        return seen[1], seen[2]
    if time.monotonic() - _UNREACHABLE.get(key, -SEEN_FOR) < SEEN_FOR:
        return None  # asked moments ago, by another cloud's backend: no second wait
    try:
        store = ctx.store or (seen[1] if seen else Store.open(ctx.home))
        records = team.listed(store)
    except StoreError as e:  # the next command looks again; the command's own use of the
        _UNREACHABLE[key] = time.monotonic()  # store says it is unreachable, once
        log.info("%s; other homes' stacks are not looked at.", e.message.rstrip("."))
        return None
    _SEEN[key] = (time.monotonic(), store, records)
    return store, records
