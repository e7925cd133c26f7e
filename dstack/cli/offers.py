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
        None, "--backend", help="Only this backend (a cloud not set up: its catalog)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    from dstack.backends.base import Context
    from dstack.backends.registry import check_backend, open_all
    from dstack.cli.common import open_state
    from dstack.hostinfo import describe
    from dstack.runner.placement import list_offers
    from dstack.spec.jobspec import ResourcesSpec

    check_backend(backend)
    want = ResourcesSpec(gpu=_gpu(gpu) if gpu else None)
    home, state = open_state()
    listing = list_offers(open_all(Context(home, state)), want, backend)
    shown = listing.offers
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
    sys.stderr.write("\n".join(listing.notes) + "\n")


def _gpu(text: str) -> GPUSpec:
    from dstack.errors import SpecError
    from dstack.spec.jobspec import GPUSpec

    name, _, count = text.partition(":")
    if not name or (count and not count.isdigit()):
        raise SpecError(f"--gpu '{text}' is not NAME or NAME:COUNT.", hint="e.g. --gpu A100:8")
    return GPUSpec(count=int(count or 1), name=name)
