"""The one matcher of jobs to hosts: this machine and the pool's servers, filtered by what the
run allows (--backend, --host) and by each job's minimum resources."""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstack.config import local_enabled
from dstack.errors import NotFoundError, ResourceError
from dstack.home import Home
from dstack.hostinfo import HostResources, describe, local_resources, missing_resources
from dstack.pool import Pool, PoolHost, sync_config_hosts
from dstack.spec.jobspec import JobSpec
from dstack.state.db import State

LOCAL = "local"
REACH_TIMEOUT = 3.0


@dataclass(frozen=True)
class Candidate:
    name: str
    resources: HostResources
    host: PoolHost | None = None


def candidates(
    home: Home, state: State, placement: dict[str, Any], with_gpus: bool
) -> list[Candidate]:
    backend, only = placement.get("backend"), placement.get("host")
    found: list[Candidate] = []
    if backend in (None, LOCAL) and only in (None, LOCAL) and local_enabled(home):
        found.append(Candidate(LOCAL, local_resources(home.root, with_gpus)))
    if backend in (None, "ssh"):
        sync_config_hosts(home, state)
        found += [
            Candidate(h.name, h.facts.resources, h)
            for h in Pool(state).hosts()
            if only in (None, h.name)
        ]
    if only not in (None, LOCAL) and not any(c.name == only for c in found):
        raise NotFoundError(f"No host named '{only}' in the pool.", hint="see `dstack pool list`")
    return found


def fitting(spec: JobSpec, found: list[Candidate]) -> list[Candidate]:
    """The candidates the job fits on, in order of preference; an error saying why when none."""
    fits = [c for c in found if not missing_resources(spec.resources, c.resources)]
    if fits:
        return fits
    if not found:
        raise ResourceError(
            f"No host may run workflow '{spec.name}': this machine is switched off "
            "(or excluded by --backend/--host) and the pool is empty.",
            hint="add a server with `dstack pool add`, or drop --backend/--host",
        )
    reasons = "\n".join(
        f"  {c.name} ({describe(c.resources)}): "
        + "; ".join(missing_resources(spec.resources, c.resources))
        for c in found
    )
    raise ResourceError(
        f"No host fits workflow '{spec.name}':\n{reasons}",
        hint="lower 'resources' in the workflow, or add a bigger server to the pool",
    )


def unreachable(host: PoolHost, timeout: float = REACH_TIMEOUT) -> str | None:
    """Why the host's SSH port does not answer, or None when it does. A TCP connection only
    (a millisecond on a LAN), so that a job goes to another host instead of spending the
    SSH client's minute of reconnecting on a host that is down."""
    if _routed_by_ssh_config(host.address.host):
        return None  # an alias or a jump host in ~/.ssh/config: only SSH itself can tell
    try:
        with socket.create_connection((host.address.host, host.address.port), timeout):
            return None
    except socket.gaierror:
        return None  # a name this machine's resolver does not know; SSH may (its config)
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


@functools.cache
def _routed_by_ssh_config(host: str) -> bool:
    """Whether ~/.ssh/config gives the host another name, or a proxy to reach it by (Fabric
    follows that config, a plain TCP connection does not)."""
    path = Path.home() / ".ssh" / "config"
    if not path.is_file():
        return False
    import paramiko

    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(host)
    except (OSError, ValueError, paramiko.SSHException):
        return True  # a config we cannot read: leave it to SSH
    return found.get("hostname", host) != host or bool({"proxyjump", "proxycommand"} & set(found))
