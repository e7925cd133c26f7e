"""The one matcher of a job's minimum resources to offers: this machine and the pool's servers
(price 0) and the clouds set up in config.yaml within their limits; the cheapest fit wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dstack.backends.catalog import Catalog
from dstack.config import CloudLimits
from dstack.hostinfo import HostResources, missing_resources
from dstack.spec.jobspec import ResourcesSpec

if TYPE_CHECKING:
    from dstack.home import Home
    from dstack.runner.placement import Candidate

OWN = ("local", "ssh")


@dataclass(frozen=True)
class Offer:
    """Somewhere a job can run: ``name`` is the instance type, or the host's name."""

    backend: str
    name: str
    region: str
    resources: HostResources
    price: float
    spot: bool = False

    @property
    def sort_key(self) -> tuple[float, int, str, str, bool]:
        return (self.price, 0 if self.backend in OWN else 1, self.backend, self.name, self.spot)


def check_backend(backend: str | None, home: Home | None = None) -> None:
    """Refuse a --backend that names nothing dstack knows, or (given the home, for `run` and
    `plan`) a cloud that config.yaml does not set up."""
    from dstack.backends.catalog import CLOUDS
    from dstack.config import cloud_limits
    from dstack.errors import SpecError

    if backend not in (None, *OWN, *CLOUDS):
        raise SpecError(f"'{backend}' is not a backend.", hint="use local, ssh, aws, gcp or azure")
    if home is not None and backend in CLOUDS and backend not in cloud_limits(home):
        raise SpecError(
            f"--backend {backend}: {backend} is not set up in {home.root / 'config.yaml'}.",
            hint=f"add it under backends, e.g. `backends: {{{backend}: {{max_price: 2}}}}`; "
            f"`dstack offers --backend {backend}` lists its catalog",
        )


def own_offers(hosts: Iterable[Candidate]) -> list[Offer]:
    """This machine and the pool's servers, as offers at price 0."""
    return [Offer("ssh" if c.host else "local", c.name, "", c.resources, 0.0) for c in hosts]


def catalog_offers(catalog: Catalog, clouds: Iterable[str]) -> list[Offer]:
    """Each instance type of the clouds, on demand and as spot, in every region."""
    wanted = set(clouds)
    offers = []
    for t in catalog.types:
        if t.backend in wanted:
            offers.append(Offer(t.backend, t.name, t.region, t.resources, t.price))
            offers.append(Offer(t.backend, t.name, t.region, t.resources, t.spot_price, True))
    return offers


Rule = tuple[str, Callable[[Offer], bool]]


def limit_rules(limits: CloudLimits, interruptible: bool | None) -> list[Rule]:
    """A cloud's limits as named filters, in the order they are explained. ``interruptible``
    is the job's wish (None: any job, as `dstack offers` lists)."""
    rules: list[Rule] = []
    if limits.instance_types is not None:
        allowed = set(limits.instance_types)
        rules.append((f"instance_types {sorted(allowed)}", lambda o: o.name in allowed))
    if limits.regions is not None:
        regions = set(limits.regions)
        rules.append((f"regions {sorted(regions)}", lambda o: o.region in regions))
    if limits.spot == "never":
        rules.append(("spot: never", lambda o: not o.spot))
    elif limits.spot == "only":
        note = "spot: only" + (" (the job is not interruptible)" if interruptible is False else "")
        rules.append((note, lambda o: o.spot and interruptible is not False))
    elif interruptible is False:
        rules.append(("on demand (the job is not interruptible)", lambda o: not o.spot))
    if limits.max_price is not None:
        top = limits.max_price
        rules.append((f"max_price ${top:g}/h", lambda o: o.price <= top))
    return rules


def allowed(
    offers: list[Offer], limits: dict[str, CloudLimits], interruptible: bool | None
) -> list[Offer]:
    """The offers each cloud's limits allow (own offers have none), cheapest first."""
    kept = []
    for offer in offers:
        rules = limit_rules(limits[offer.backend], interruptible) if offer.backend in limits else []
        if all(test(offer) for _, test in rules):
            kept.append(offer)
    return sorted(kept, key=lambda o: o.sort_key)


def fitting(want: ResourcesSpec, offers: list[Offer]) -> list[Offer]:
    return [o for o in offers if not missing_resources(want, o.resources)]


def why_not(
    want: ResourcesSpec, offers: list[Offer], limits: dict[str, CloudLimits]
) -> dict[str, str]:
    """Per cloud, the reason none of its offers may run the job: nothing fits, or the first
    limit that leaves none of the fitting ones (naming it and the cheapest it excluded)."""
    reasons = {}
    for cloud, cloud_limits in limits.items():
        fit = sorted(
            fitting(want, [o for o in offers if o.backend == cloud]), key=lambda o: o.sort_key
        )
        if not fit:
            reasons[cloud] = "no instance type in the catalog fits"
            continue
        for name, test in limit_rules(cloud_limits, want.interruptible):
            remaining = [o for o in fit if test(o)]
            if not remaining:
                cheapest = fit[0]
                reasons[cloud] = (
                    f"the limit {name} excludes all {len(fit)} fitting offers (cheapest: "
                    f"{cheapest.name} in {cheapest.region}, ${cheapest.price:g}/h"
                    + (", spot" if cheapest.spot else "")
                    + ")"
                )
                break
            fit = remaining
    return reasons


def choose(
    want: ResourcesSpec, offers: list[Offer], limits: dict[str, CloudLimits], job: str = ""
) -> Offer:
    """The cheapest allowed offer the job fits; an error naming, per host and cloud, why not."""
    from dstack.errors import ResourceError
    from dstack.hostinfo import describe

    fits = allowed(fitting(want, offers), limits, want.interruptible)
    if fits:
        return fits[0]
    reasons = [
        f"  {o.name} ({describe(o.resources)}): " + "; ".join(missing_resources(want, o.resources))
        for o in offers
        if o.backend in OWN
    ]
    reasons += [f"  {cloud}: {why}" for cloud, why in why_not(want, offers, limits).items()]
    raise ResourceError(
        f"No offer fits {f'the job {job!r}' if job else 'the job'}:\n"
        + ("\n".join(reasons) or "  nothing is set up"),
        hint="lower 'resources', add a server with `dstack pool add`, or widen a cloud's limits "
        "in DSTACK_HOME/config.yaml (see `dstack offers`)",
    )
