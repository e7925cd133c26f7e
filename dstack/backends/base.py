"""What a backend is: one place jobs can run (this machine, the pool of own servers, a cloud).

A backend offers somewhere to run a job at a price; placement picks among every backend's
offers once per job at submission and the state keeps the pick. When the job starts, the
backend acquires the offer (a free slot, a host it creates) and gives the executor that runs
the job there; when the job ends, it lets the host go (frees the slot, destroys the VM).
Views reach a recorded job's host again through `executor`; `gc` asks each backend what it
left behind, `fsck` which lasting hosts keep caches. A backend that creates hosts also shows
them before anything exists: `plan` previews them for `dstack plan`, `reserve` records and
previews a new run's hosts for its review, and `withdraw` undoes that when the run is
declined. Everything else in dstack talks to backends only through this interface and
`dstack.backends.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dstack.backends.plans import HostPlan, PlacedJob, Previewed
    from dstack.execution.base import Executor
    from dstack.home import Home
    from dstack.offer import Offer, Scope
    from dstack.spec.jobspec import ResourcesSpec
    from dstack.ssh.connect import HostAddress
    from dstack.state.db import State
    from dstack.state.records import JobRecord
    from dstack.storage.store import Store

Notes = Callable[[str], None]


@dataclass
class Context:
    """What a backend works with; ``store`` and ``notes`` only where jobs run."""

    home: Home
    state: State
    store: Store | None = None
    notes: Notes = lambda text: None


@dataclass(frozen=True)
class Waiting:
    """The offer cannot be taken yet: the job waits for ``what`` (``why`` None: no note)."""

    what: str
    why: str | None = None


@dataclass(frozen=True)
class Unavailable:
    """The offer cannot be taken now at all (its host is down): try the next one."""

    name: str
    why: str


@dataclass(frozen=True)
class KeptHost:
    """A host whose ``root`` folder (``~/.dstack``) holds caches shared between runs."""

    name: str
    address: HostAddress
    known_hosts: Path
    root: str


@dataclass(frozen=True)
class Leftover:
    """Something a backend created that outlived its run, for `dstack gc`."""

    name: str
    backend: str
    status: str
    created_at: float
    why: str
    run: str = ""
    job: str = ""


class Backend(ABC):
    """One kind of place to run jobs. Instances live as long as one command or supervisor."""

    name: ClassVar[str]
    own: ClassVar[bool] = False  # hardware already there: price 0, nothing created or destroyed
    here: ClassVar[bool] = False  # jobs run on this machine (its tools can be checked at once)
    # "module:Class" of the pydantic model of its section of config.yaml (loaded only when
    # config.yaml is validated, so running a job imports no pydantic); None: no section.
    settings_model: ClassVar[str | None] = None
    settings_by_default: ClassVar[bool] = False  # in use without a section in config.yaml

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # set-up ---------------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether config.yaml lets dstack use this backend."""
        return self.settings_by_default or self.section() is not None

    def section(self) -> dict[str, Any] | None:
        """The backend's validated section of config.yaml (None: absent)."""
        from dstack.config import backend_section

        return backend_section(self.ctx.home, self.name)

    def not_set_up_hint(self) -> str:
        return f"add it under backends in {self.ctx.home.root / 'config.yaml'}"

    # placement ------------------------------------------------------------------------------

    @abstractmethod
    def offers(self, scope: Scope, with_gpus: bool) -> list[Offer]:
        """Where this backend could run a job of the run (before any resource filter)."""

    def allows(self, offer: Offer, interruptible: bool | None) -> bool:
        """Whether the backend's limits let a job take the offer (its resources fit already);
        ``interruptible`` None: any job, as `dstack offers` lists them."""
        return True

    def why_none(self, want: ResourcesSpec, offers: list[Offer]) -> list[str]:
        """Lines saying why none of the backend's ``offers`` may run the job."""
        from dstack.hostinfo import describe, missing_resources

        return [
            f"{o.name} ({describe(o.resources)}): "
            + "; ".join(missing_resources(want, o.resources))
            for o in offers
        ]

    def catalog(self) -> list[Offer]:
        """What the backend would offer once set up (`dstack offers --backend NAME`)."""
        return []

    def listing_notes(self) -> list[str]:
        """What `dstack offers` should say about where the backend's offers come from."""
        return []

    # a job's life ---------------------------------------------------------------------------

    @abstractmethod
    def acquire(self, job: JobRecord, offer: Offer) -> Executor | Waiting | Unavailable:
        """Take the offer for the job; called again each round while it says Waiting."""

    def release(self, job: JobRecord, files_safe: bool, executor: Executor | None) -> None:
        """Let the job's host go once its files are saved (or it failed to start:
        ``executor`` None); the executor may be used, and closed, here."""

    def preparing(self, workflow: str) -> bool:
        """Whether the job's host is still being made ready (nothing to try this round)."""
        return False

    def finish(self, run: str) -> None:
        """The run is over: nothing this backend holds for it may outlive it."""

    # hosts to create, shown before anything exists (own hardware creates none) ----------------

    def check_tools(self) -> None:
        """Refuse, before anything is recorded, when a tool that creates hosts is missing."""

    def plan(self, jobs: list[PlacedJob], offline: bool) -> Previewed:
        """The hosts the jobs would get, recording nothing (`dstack plan`); ``offline``: an
        earlier preview found no engine or a failing one, so preview without it."""
        return Previewed([])

    def reserve(self, run: str, jobs: list[PlacedJob]) -> list[HostPlan]:
        """Record the hosts a new run's jobs will get, then preview them for its review;
        nothing exists yet, and ``withdraw`` undoes whatever was recorded."""
        return []

    def withdraw(self, run: str) -> bool:
        """Undo ``reserve`` (the run was declined, or its review failed); True when nothing
        reserved for the run is left."""
        return True

    def export(
        self, jobs: list[PlacedJob], folder: Path, allowed_cidr: str, ssh_public_key: str
    ) -> None:
        """Write the jobs' hosts into ``folder`` as a project that the backend's own tool
        creates without dstack (`dstack plan --export`); ``allowed_cidr`` and
        ``ssh_public_key`` fill in what dstack finds at launch ("": the user sets it)."""
        from dstack.errors import SpecError

        raise SpecError(f"The {self.name} backend cannot write its hosts as a project.")

    # reaching a recorded job's host again ----------------------------------------------------

    @abstractmethod
    def executor(self, host: str, patient: bool = True) -> Executor:
        """The executor of a host a job was placed on (``patient``: reconnect for a minute)."""

    def address(self, host: str) -> tuple[HostAddress, Path] | None:
        """How to reach the host over SSH and its pinned host keys; None: this machine."""
        return None

    # gc and fsck ----------------------------------------------------------------------------

    def kept_hosts(self) -> list[KeptHost]:
        """Hosts that outlive runs and keep dstack's caches between them (blobs,
        environments), which other homes may share: `dstack fsck` checks them. None for
        hosts made for one run."""
        return []

    def leftovers(self) -> list[Leftover]:
        """What this backend created for runs that are over."""
        return []

    def clean(self, item: Leftover) -> bool:
        """Remove one leftover; True when it is gone."""
        return True
