"""The pool of own servers, reached over SSH: each job takes a free slot of the first fitting
host that answers, at no price; its folder there is removed once its files are saved."""

from __future__ import annotations

import functools
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.backends.base import Backend, Context, KeptHost, Unavailable, Waiting
from dstack.offer import Scope

if TYPE_CHECKING:
    from dstack.backends.ssh.pool import PoolHost
    from dstack.execution.base import Executor
    from dstack.offer import Offer
    from dstack.ssh.connect import HostAddress
    from dstack.state.records import JobRecord

NAME = "ssh"
REACH_TIMEOUT = 3.0
DOWN_FOR = 30.0  # an unreachable host is tried again after this many seconds

log = logging.getLogger(__name__)


class PoolBackend(Backend):
    name = NAME
    own = True
    settings_model = "dstack.backends.ssh.settings:SSHSettings"
    settings_by_default = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.down: dict[str, float] = {}  # unreachable hosts: when to try each again

    def keep_job_dirs(self) -> bool:
        return bool((self.section() or {}).get("keep_run_dirs", False))

    def offers(self, scope: Scope, with_gpus: bool) -> list[Offer]:
        from dstack.backends.ssh.pool import Pool, sync_config_hosts
        from dstack.offer import Offer

        if scope.backend not in (None, NAME):
            return []
        sync_config_hosts(self.ctx.home, self.ctx.state)
        return [
            Offer(NAME, h.name, "", h.facts.resources, 0.0, own=True)
            for h in Pool(self.ctx.state).hosts()
            if scope.host in (None, h.name)
        ]

    def acquire(self, job: JobRecord, offer: Offer) -> Executor | Waiting | Unavailable:
        from dstack.backends.ssh.pool import Pool

        if self.down.get(offer.name, 0.0) > time.monotonic():
            return Unavailable(offer.name, "unreachable a moment ago")
        pool = Pool(self.ctx.state)
        host = pool.host(offer.name)
        if not pool.claim(host, job.run_name, job.workflow):
            return Waiting("a free host", f"{offer.name} busy")
        why = unreachable(host)
        if why is None:
            return self.executor(offer.name)
        pool.release(job.run_name, job.workflow)
        self.down[offer.name] = time.monotonic() + DOWN_FOR
        log.warning("pool host %s is unreachable (%s); trying the others", offer.name, why)
        return Unavailable(offer.name, why)

    def release(self, job: JobRecord, files_safe: bool, executor: Executor | None) -> None:
        from dstack.backends.ssh.pool import Pool
        from dstack.errors import DstackError, describe

        if executor is not None and job.job_dir and files_safe and not self.keep_job_dirs():
            try:
                executor.cleanup(job.job_dir)
            except (DstackError, OSError) as e:
                log.warning("could not remove %s on its host: %s", job.job_dir, describe(e))
        Pool(self.ctx.state).release(job.run_name, job.workflow)

    def executor(self, host: str, patient: bool = True) -> Executor:
        from dstack.backends.ssh.pool import Pool
        from dstack.execution.ssh import SSHExecutor
        from dstack.storage.store import Store

        executor = SSHExecutor(
            Pool(self.ctx.state).host(host),
            self.ctx.store or Store.open(self.ctx.home),
            self.ctx.home.root / "known_hosts",
            self.ctx.home,
            retry_for=60.0 if patient else 3.0,
        )
        return executor

    def address(self, host: str) -> tuple[HostAddress, Path]:
        from dstack.backends.ssh.pool import Pool

        return Pool(self.ctx.state).host(host).address, self.ctx.home.root / "known_hosts"

    def kept_hosts(self) -> list[KeptHost]:
        """The hosts `dstack pool list` shows (those of config.yaml join first, as there)."""
        from dstack.backends.ssh.pool import Pool, sync_config_hosts

        sync_config_hosts(self.ctx.home, self.ctx.state)
        known_hosts = self.ctx.home.root / "known_hosts"
        return [
            KeptHost(host.name, host.address, known_hosts, f"{host.facts.home}/.dstack")
            for host in Pool(self.ctx.state).hosts()
        ]


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
        found: dict[str, Any] = paramiko.SSHConfig.from_path(str(path)).lookup(host)
    except (OSError, ValueError, paramiko.SSHException):
        return True  # a config we cannot read: leave it to SSH
    return found.get("hostname", host) != host or bool({"proxyjump", "proxycommand"} & set(found))
