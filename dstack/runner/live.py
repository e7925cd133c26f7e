"""What the supervisor reads and saves while a job runs: new log bytes (mirrored from a host
first) and the `mount: true` artifacts, saved as a live manifest whenever they change."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dstack.errors import DstackError, describe
from dstack.execution.base import Executor
from dstack.execution.local import log_bytes
from dstack.home import Home
from dstack.runner.agents import AgentWatch
from dstack.runner.finish import mirror_log
from dstack.spec.jobspec import JobSpec
from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.storage.manifest import Manifest, StatCache
from dstack.storage.store import Store, artifact_key

log = logging.getLogger(__name__)


def new_log_bytes(home: Home, executor: Executor, job: JobRecord, offset: int) -> bytes:
    """Log bytes from ``offset`` on, always from the local file."""
    return log_bytes(mirror_log(home, executor, job), offset)


def save_mounts(
    store: Store,
    state: State,
    executor: Executor,
    job: JobRecord,
    spec: JobSpec,
    cache: StatCache,
    saved: bytes,
) -> bytes:
    """Store the job's `mount: true` artifacts when they differ from ``saved`` (the manifest
    saved last); returns the manifest now saved."""
    mounts = [a.path for a in spec.artifacts if a.mount]
    if not mounts or not job.job_dir:
        return saved
    manifest = Manifest(executor.collect(job.job_dir, mounts, cache), "live", mounts)
    raw = manifest.to_json()
    if raw != saved:
        key = artifact_key(job.run_name, job.workflow)
        store.put_manifest(key, manifest)
        if job.manifest is None:
            state.update_job(job.run_name, job.workflow, manifest=key)
    return raw


class LiveSaver:
    """Saves each running job's `mount: true` artifacts; when that fails (the store down, a
    full disk) the job goes on, warned about once, and sealing it at its end says whether its
    files could be saved. A job whose host agent saves them is only watched (AgentWatch)."""

    def __init__(
        self, store: Store, state: State, cache: StatCache, note: Callable[[str], None]
    ) -> None:
        self.store, self.state, self.cache = store, state, cache
        self.failing: set[str] = set()  # jobs whose live saving fails (warned once)
        self.agents = AgentWatch(note)

    def save(self, executor: Executor, job: JobRecord, spec: JobSpec, saved: bytes) -> bytes:
        if job.agent:
            self.agents.look(executor, job)
            return saved
        try:
            saved = save_mounts(self.store, self.state, executor, job, spec, self.cache, saved)
        except (DstackError, OSError) as e:
            if job.workflow not in self.failing:
                self.failing.add(job.workflow)
                log.warning(
                    "saving %s's artifacts while it runs failed: %s", job.workflow, describe(e)
                )
        else:
            self.failing.discard(job.workflow)
        return saved
