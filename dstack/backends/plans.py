"""What a backend that creates hosts shows before anything exists, in words every backend
shares: `dstack plan` (Backend.plan) and a new run's review (Backend.reserve). Only those
paths import this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dstack.offer import Offer
    from dstack.spec.jobspec import JobSpec


@dataclass(frozen=True)
class PlacedJob:
    """A job and the one offer placement chose for it, on a backend that creates its host."""

    spec: JobSpec
    offer: Offer


@dataclass(frozen=True)
class OfferSummary:
    """An offer as a plan shows it and a backend records it: where, what, the price per hour."""

    backend: str
    name: str
    region: str
    gpus: str
    spot: bool
    price: float

    @classmethod
    def of(cls, offer: Offer) -> OfferSummary:
        gpus = offer.resources.gpus
        shown = f"{len(gpus)}x {gpus[0].name}" if gpus else ""
        return cls(offer.backend, offer.name, offer.region, shown, offer.spot, offer.price)


@dataclass(frozen=True)
class PlannedResource:
    """One resource that creating a host would make, with the inputs a reviewer checks."""

    type: str
    name: str
    inputs: dict[str, str]


@dataclass(frozen=True)
class SSHRule:
    """Who a created host's SSH admits (``cidr`` None: not known now, ``problem`` says why)
    and where that range comes from."""

    cidr: str | None
    source: str
    problem: str | None = None


@dataclass(frozen=True)
class HostPlan:
    """The host a backend would create for one job, before anything exists: every resource
    its creation makes, who may reach it, and the deadline (minutes; None: none) after which
    it powers itself off, whatever happens to dstack, which caps what it can cost."""

    job: str
    offer: Offer
    resources: list[PlannedResource]
    ssh_from: SSHRule | None = None
    deadline_minutes: int | None = None

    @property
    def cost_cap(self) -> float | None:
        """The most the host can cost: its price until its deadline."""
        if self.deadline_minutes is None:
            return None
        return round(self.offer.price * self.deadline_minutes / 60, 2)


@dataclass(frozen=True)
class Previewed:
    """The hosts `dstack plan` shows. ``offline``: previewed without the backend's engine
    (it is not there, or it failed: ``problem`` says why), so later backends need not try."""

    hosts: list[HostPlan]
    offline: bool = False
    problem: str | None = None
