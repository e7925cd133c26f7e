"""A cloud's limits from config.yaml (regions, instance types, spot, price) as named rules over
its catalog's offers, and the reason, in words, when they leave a job nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dstack.backends.cloud.catalog import Catalog
from dstack.hostinfo import missing_resources
from dstack.offer import Offer
from dstack.spec.jobspec import ResourcesSpec


@dataclass(frozen=True)
class CloudLimits:
    """`backends.aws|gcp|azure` (validated by dstack.backends.cloud.settings)."""

    regions: tuple[str, ...] | None = None
    instance_types: tuple[str, ...] | None = None
    spot: str = "auto"
    max_instances: int = 4
    max_price: float | None = None
    allowed_cidr: str | None = None
    boot_timeout: int = 600

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> CloudLimits:
        regions, types = section.get("regions"), section.get("instance_types")
        return cls(
            regions=tuple(regions) if regions is not None else None,
            instance_types=tuple(types) if types is not None else None,
            spot=section.get("spot", "auto"),
            max_instances=section.get("max_instances", 4),
            max_price=section.get("max_price"),
            allowed_cidr=section.get("allowed_cidr"),
            boot_timeout=section.get("boot_timeout", 600),
        )


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
    """The offers each cloud's limits allow, cheapest first."""
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
