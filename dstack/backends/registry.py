"""The backends dstack knows: one line each. A new backend is a folder beside these and a line
here; nothing else in dstack names a backend.

Backends load when first used, so a command that never places a job imports none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dstack.errors import SpecError

if TYPE_CHECKING:
    from pathlib import Path

    from dstack.backends.base import Backend, Context, Leftover
    from dstack.execution.base import Executor
    from dstack.ssh.connect import HostAddress
    from dstack.state.records import JobRecord

# name -> "module:Class". Own hardware is tried in this order (this machine before the pool).
BUILTIN = {
    "local": "dstack.backends.local:LocalBackend",
    "ssh": "dstack.backends.ssh.backend:PoolBackend",
    "aws": "dstack.backends.aws:AwsBackend",
    "gcp": "dstack.backends.gcp:GcpBackend",
    "azure": "dstack.backends.azure:AzureBackend",
}

HERE = "local"  # the backend of jobs recorded before there were others

# Command groups a backend adds to the CLI: group name -> "module:Typer app" (loaded for
# `dstack --help`, so such a module imports nothing heavy at its top).
COMMANDS = {
    "pool": "dstack.backends.ssh.cli:app",
}

_classes: dict[str, type[Backend]] = {}
_registered: dict[str, type[Backend]] = {}


def register(backend: type[Backend]) -> None:
    """Add a backend class under its ``name`` (plug-ins, and tests' throw-away backends)."""
    _registered[backend.name] = backend


def unregister(name: str) -> None:
    _registered.pop(name, None)


def names() -> list[str]:
    return [*BUILTIN, *(n for n in _registered if n not in BUILTIN)]


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name``; a clear error for a name dstack does not know."""
    if name in _registered:
        return _registered[name]
    if name not in _classes:
        if name not in BUILTIN:
            from dstack.spec.suggest import did_you_mean

            raise SpecError(
                f"'{name}' is not a backend.",
                hint=did_you_mean(name, names()) or f"use one of: {', '.join(names())}",
            )
        module, _, attr = BUILTIN[name].partition(":")
        _classes[name] = getattr(importlib.import_module(module), attr)
    return _classes[name]


def open_backend(name: str, ctx: Context) -> Backend:
    return backend_class(name)(ctx)


def open_all(ctx: Context) -> dict[str, Backend]:
    """Every known backend, by name, for one command or one run."""
    return {name: open_backend(name, ctx) for name in names()}


def check_backend(backend: str | None, ctx: Context | None = None) -> None:
    """Refuse a --backend that names nothing dstack knows, or (given a context, for `run` and
    `plan`) one that config.yaml does not set up."""
    if backend is None:
        return
    chosen = backend_class(backend)
    if ctx is not None:
        opened = chosen(ctx)
        if not opened.enabled():
            raise SpecError(
                f"--backend {backend}: {backend} is not set up in {ctx.home.root / 'config.yaml'}.",
                hint=opened.not_set_up_hint(),
            )


def executor_of_job(ctx: Context, job: JobRecord, patient: bool = True) -> Executor:
    """The executor of the host the job was placed on, from its record."""
    return open_backend(job.backend or HERE, ctx).executor(job.host or HERE, patient)


def address_of_job(ctx: Context, job: JobRecord) -> tuple[HostAddress, Path] | None:
    """How to reach the job's host over SSH; None when it ran on this machine."""
    return open_backend(job.backend or HERE, ctx).address(job.host or HERE)


def leftovers(ctx: Context) -> list[Leftover]:
    """What every backend created for runs that are over (for `dstack gc`)."""
    return [item for backend in open_all(ctx).values() for item in backend.leftovers()]


def clean(ctx: Context, item: Leftover) -> bool:
    """Remove one leftover through the backend that made it; True when it is gone."""
    return open_backend(item.backend, ctx).clean(item)
