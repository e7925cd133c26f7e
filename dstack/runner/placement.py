"""The one matcher of jobs to offers, run once per job when a run is submitted: every backend's
offers within what the run allows (--backend, --host), filtered by the job's minimum resources
and each backend's limits; the cheapest wins. Own hardware (price 0) comes as the ordered list
of every fitting host, so the job takes the first one free when it starts; a cloud as its one
cheapest offer. The state keeps the result: nothing decides or probes it again later."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dstack.errors import NotFoundError, ResourceError
from dstack.hostinfo import describe, missing_resources

if TYPE_CHECKING:
    from dstack.backends.base import Backend
    from dstack.home import Home
    from dstack.offer import Offer, Scope
    from dstack.spec.jobspec import JobSpec, ResourcesSpec
    from dstack.state.db import State


def run_offers(backends: Mapping[str, Backend], scope: Scope, with_gpus: bool) -> list[Offer]:
    """Every offer the run may use; an error when --host names no host."""
    offers = [o for b in backends.values() for o in b.offers(scope, with_gpus)]
    if scope.host is not None and not any(o.name == scope.host for o in offers):
        raise NotFoundError(
            f"No host named '{scope.host}' in the pool.", hint="see `dstack pool list`"
        )
    return offers


def place(spec: JobSpec, offers: Sequence[Offer], backends: Mapping[str, Backend]) -> list[Offer]:
    """The job's placement: the fitting own hosts in order, else its cheapest allowed offer;
    an error naming, per host and backend, why none fits."""
    want = spec.resources
    fits = [
        o
        for o in offers
        if not missing_resources(want, o.resources)
        and backends[o.backend].allows(o, want.interruptible)
    ]
    if fits:
        best = min(fits, key=lambda o: o.sort_key)
        return [o for o in fits if o.own] if best.own else [best]
    if all(backends[o.backend].own for o in offers):
        raise _no_own_host(spec, offers)
    reasons = [
        line
        for backend in backends.values()
        if any(o.backend == backend.name for o in offers)
        for line in backend.why_none(want, [o for o in offers if o.backend == backend.name])
    ]
    raise ResourceError(
        f"No offer fits the job {spec.name!r}:\n"
        + ("\n".join(f"  {r}" for r in reasons) or "  nothing is set up"),
        hint="lower 'resources', add a server with `dstack pool add`, or widen a cloud's limits "
        "in DSTACK_HOME/config.yaml (see `dstack offers`)",
    )


def place_jobs(
    specs: Sequence[JobSpec], backends: Mapping[str, Backend], scope: Scope
) -> dict[str, list[Offer]]:
    """Each job's placement, by name (offers are gathered once for all of them)."""
    gpus = any(s.resources.gpu and s.resources.gpu.count for s in specs)
    offers = run_offers(backends, scope, with_gpus=gpus)
    return {spec.name: place(spec, offers, backends) for spec in specs}


def _no_own_host(spec: JobSpec, offers: Sequence[Offer]) -> ResourceError:
    if not offers:
        return ResourceError(
            f"No host may run workflow '{spec.name}': this machine is switched off "
            "(or excluded by --backend/--host) and the pool is empty.",
            hint="add a server with `dstack pool add`, or drop --backend/--host",
        )
    reasons = "\n".join(
        f"  {o.name} ({describe(o.resources)}): "
        + "; ".join(missing_resources(spec.resources, o.resources))
        for o in offers
    )
    return ResourceError(
        f"No host fits workflow '{spec.name}':\n{reasons}",
        hint="lower 'resources' in the workflow, or add a bigger server to the pool",
    )


@dataclass(frozen=True)
class Listing:
    """What `dstack offers` shows: the offers, and notes about where they come from."""

    offers: list[Offer]
    notes: list[str]


def list_offers(backends: Mapping[str, Backend], want: ResourcesSpec, only: str | None) -> Listing:
    """Every offer the job could take, cheapest first; with ``only``, that backend's, even
    when it is not set up (its catalog, marked as never used)."""
    from dstack.offer import Scope

    scope = Scope(backend=only)
    found: list[Offer] = []
    notes: list[str] = []
    renting = [b for b in backends.values() if not b.own and b.enabled()]
    for backend in backends.values():
        if only not in (None, backend.name):
            continue
        if backend.enabled():
            found += backend.offers(scope, with_gpus=True)
        elif only == backend.name:
            found += backend.catalog()
            notes.append(
                f"{backend.name} is not set up (backends.{backend.name} in "
                "DSTACK_HOME/config.yaml): its offers are listed, never used."
            )
        notes += [n for n in backend.listing_notes() if n not in notes]
    if not renting and only is None:
        clouds = [b.name for b in backends.values() if not b.own]
        notes.append(
            f"No cloud is set up; `dstack offers --backend {clouds[0]}` lists its catalog"
            f" (also: {', '.join(clouds[1:])})."
            if len(clouds) > 1
            else "No cloud is set up."
        )
    shown = [
        o
        for o in found
        if not missing_resources(want, o.resources) and backends[o.backend].allows(o, None)
    ]
    return Listing(sorted(shown, key=lambda o: o.sort_key), notes)


def decide(
    home: Home, state: State, specs: Sequence[JobSpec], scope: Scope
) -> dict[str, list[Offer]]:
    """Each job's placement over every registered backend (a new run, a rerun)."""
    from dstack.backends.base import Context
    from dstack.backends.registry import open_all

    return place_jobs(specs, open_all(Context(home, state)), scope)
