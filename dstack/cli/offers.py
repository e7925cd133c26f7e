"""`dstack offers`: where a job could run and what it costs per hour."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from dstack.cli.common import print_json, table

if TYPE_CHECKING:
    from dstack.spec.jobspec import GPUSpec


def register(app: typer.Typer) -> None:
    app.command(
        help="List offers, cheapest first: this machine and the pool (free), and the clouds set "
        "up in config.yaml within their limits (prices from the shipped catalog)."
    )(offers)


def offers(
    gpu: str | None = typer.Option(
        None, "--gpu", metavar="NAME[:COUNT]", help="Only offers with this GPU, e.g. A100:8"
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="local, ssh, aws, gcp or azure (a cloud not set up: its catalog)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    from dstack.backends.catalog import CLOUDS, load_catalog
    from dstack.backends.offers import allowed, catalog_offers, check_backend, fitting, own_offers
    from dstack.cli.common import open_state
    from dstack.config import cloud_limits
    from dstack.hostinfo import describe
    from dstack.runner.placement import candidates
    from dstack.spec.jobspec import ResourcesSpec

    check_backend(backend)
    want = ResourcesSpec(gpu=_gpu(gpu) if gpu else None)
    home, state = open_state()
    limits = cloud_limits(home)
    clouds = [c for c in CLOUDS if c in limits or c == backend]
    catalog = load_catalog()
    found = []
    if backend in (None, "local", "ssh"):
        found = own_offers(candidates(home, state, {"backend": backend}, with_gpus=True))
    found += catalog_offers(catalog, [c for c in clouds if backend in (None, c)])
    shown = allowed(fitting(want, found), limits, interruptible=None)
    if as_json:
        print_json(
            [
                {
                    "backend": o.backend,
                    "name": o.name,
                    "region": o.region,
                    "cpus": o.resources.cpus,
                    "memory": o.resources.memory,
                    "gpus": [{"name": g.name, "memory": g.memory} for g in o.resources.gpus],
                    "price": o.price,
                    "spot": o.spot,
                }
                for o in shown
            ]
        )
        return
    if not shown:
        sys.stderr.write("No offer fits" + (f" a {gpu} GPU" if gpu else "") + ".\n")
    else:
        table(
            ["BACKEND", "REGION", "INSTANCE", "RESOURCES", "PRICE"],
            [
                [
                    o.backend,
                    o.region or "-",
                    o.name,
                    describe(o.resources).rsplit(", ", 1)[0],  # cloud disks are made to size
                    f"${o.price:g}/h" + (" spot" if o.spot else ""),
                ]
                for o in shown
            ],
            shrink=("RESOURCES", "INSTANCE"),
        )
    notes = [f"Prices: the catalog of {catalog.snapshot} (spot prices move hourly)."]
    notes += [
        f"{c} is not set up (backends.{c} in DSTACK_HOME/config.yaml): its offers are listed, "
        "never used."
        for c in clouds
        if c not in limits
    ]
    if not limits and backend is None:
        notes.append("No cloud is set up; `dstack offers --backend aws` lists AWS's catalog.")
    sys.stderr.write("\n".join(notes) + "\n")


def _gpu(text: str) -> GPUSpec:
    from dstack.errors import SpecError
    from dstack.spec.jobspec import GPUSpec

    name, _, count = text.partition(":")
    if not name or (count and not count.isdigit()):
        raise SpecError(f"--gpu '{text}' is not NAME or NAME:COUNT.", hint="e.g. --gpu A100:8")
    return GPUSpec(count=int(count or 1), name=name)
