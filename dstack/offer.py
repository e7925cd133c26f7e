"""The words of placement. An offer: somewhere a job can run, at a price; backends make them,
placement chooses among them once per job, and the state keeps the choice (so nothing decides
it again later). A scope: what a run allows placement to use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a run's scope is read by every view; a host's resources only by placement
    from dstack.hostinfo import HostResources


@dataclass(frozen=True)
class Offer:
    """``backend`` names the registered backend; ``name`` is the instance type or the host."""

    backend: str
    name: str
    region: str
    resources: HostResources
    price: float
    spot: bool = False
    own: bool = False  # hardware already there (this machine, a pool server): nothing to create

    @property
    def sort_key(self) -> tuple[float, int, str, str, bool]:
        return (self.price, 0 if self.own else 1, self.backend, self.name, self.spot)

    def to_dict(self) -> dict[str, Any]:
        r = self.resources
        return {
            "backend": self.backend,
            "name": self.name,
            "region": self.region,
            "price": self.price,
            "spot": self.spot,
            "own": self.own,
            "resources": {
                "cpus": r.cpus,
                "memory": r.memory,
                "disk_free": r.disk_free,
                "gpus": [{"name": g.name, "memory": g.memory} for g in r.gpus],
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Offer:
        from dstack.hostinfo import GPUInfo, HostResources

        r = data["resources"]
        resources = HostResources(
            int(r["cpus"]),
            int(r["memory"]),
            int(r["disk_free"]),
            [GPUInfo(str(g["name"]), int(g["memory"])) for g in r["gpus"]],
        )
        return cls(
            backend=str(data["backend"]),
            name=str(data["name"]),
            region=str(data["region"]),
            resources=resources,
            price=float(data["price"]),
            spot=bool(data["spot"]),
            own=bool(data["own"]),
        )


@dataclass(frozen=True)
class Scope:
    """What a run allows: only one backend (--backend), only one host (--host), and whether
    a busy host fails the job instead of making it wait (--no-wait)."""

    backend: str | None = None
    host: str | None = None
    no_wait: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scope:
        """From the run's stored placement column."""
        return cls(data.get("backend"), data.get("host"), bool(data.get("no_wait")))

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "host": self.host, "no_wait": self.no_wait}
