"""Checking many hosts at once, in parallel threads, with a short timeout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.errors import DstackError
from dstack.ssh.connect import connect

if TYPE_CHECKING:
    from dstack.backends.ssh.pool import PoolHost


def reachability(
    hosts: list[PoolHost], known_hosts: Path, timeout: float = 5
) -> dict[str, str | None]:
    """Host name -> None when it answers over SSH with its pinned key, else the reason."""

    def check(host: PoolHost) -> str | None:
        try:
            connect(host.address, known_hosts, timeout=timeout).close()
            return None
        except DstackError as e:
            return e.message

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as workers:
        return dict(zip((h.name for h in hosts), workers.map(check, hosts), strict=True))
